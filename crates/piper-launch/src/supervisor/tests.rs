//! The supervisor's decisions, with a clock the tests move: `t(s)` is `s`
//! seconds after the start.

use super::*;
use piper_launch::cli::RestartPolicy;

fn t0() -> Instant {
    thread_local!(static T0: Instant = Instant::now());
    T0.with(|t| *t)
}

fn t(s: f64) -> Instant {
    t0() + Duration::from_secs_f64(s)
}

fn pid(n: i32) -> Pid {
    Pid::from_raw(n)
}

fn policy(restart: RestartPolicy) -> Policy {
    Policy {
        names: ["a", "b", "c"].iter().map(|n| Name::new(n).unwrap()).collect(),
        foreground: 2,
        ready_timeout: Duration::from_secs(10),
        restart: vec![
            Restart {
                policy: restart,
                delay: Duration::from_millis(100),
                burst: 2,
                interval: Duration::from_secs(10),
                foreground: false,
            };
            3
        ],
        fail_fast: false,
        healing: None,
        ticking: false,
        waiting_for: vec![String::new(); 3],
        stderr_lost: vec![false; 3],
    }
}

/// A supervisor whose three members (a, b, c: pids 11, 12, 13 in group 10)
/// are ready, and which watches from t(1).
fn watching(policy: Policy) -> Supervisor {
    let mut s = Supervisor::new(policy, t(0.0));
    for i in 0..3 {
        let p = pid(11 + i as i32);
        s.handle(
            Event::Started {
                member: i,
                pid: p,
                group: pid(10),
            },
            t(0.1),
        );
        assert_eq!(
            s.handle(Event::Ready { member: i, pid: p }, t(0.2)),
            [Action::Place { member: i, pid: p }]
        );
    }
    assert_eq!(s.ready(), 3);
    s.watch(t(1.0));
    s
}

fn killed(p: i32) -> WaitStatus {
    WaitStatus::Signaled(pid(p), Signal::SIGKILL, false)
}

fn warned(actions: &[Action], level: log::Level, text: &str) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Log(l, m) if *l == level && m.contains(text)))
}

#[test]
fn a_failure_of_a_member_whose_stderr_goes_nowhere_says_how_to_keep_it() {
    let lost = || Policy {
        stderr_lost: vec![true, false, false],
        ..policy(RestartPolicy::No)
    };
    // Before the ring is ready.
    let mut s = Supervisor::new(lost(), t(0.0));
    let (p, g) = (pid(11), pid(11));
    s.handle(
        Event::Started {
            member: 0,
            pid: p,
            group: g,
        },
        t(0.0),
    );
    let end = s.handle(
        Event::Ended {
            member: 0,
            status: WaitStatus::Exited(p, 1),
        },
        t(0.1),
    );
    let want = format!("node 'a' (pid 11) exited with status 1 before the ring was ready ({STDERR_LOST})");
    assert_eq!(end, [Action::End(Err(want))]);
    // Once it runs; a member whose stderr is kept says nothing more.
    let mut s = watching(lost());
    let said = s.handle(
        Event::Ended {
            member: 0,
            status: WaitStatus::Exited(pid(11), 1),
        },
        t(2.0),
    );
    assert!(warned(&said, log::Level::Warn, STDERR_LOST), "{said:?}");
    let said = s.handle(
        Event::Ended {
            member: 1,
            status: WaitStatus::Exited(pid(12), 1),
        },
        t(2.0),
    );
    assert!(!warned(&said, log::Level::Warn, STDERR_LOST), "{said:?}");
    // Given up.
    let mut s = watching(Policy {
        restart: vec![
            Restart {
                burst: 0,
                ..policy(RestartPolicy::Always).restart[0]
            };
            3
        ],
        ..lost()
    });
    let said = s.handle(
        Event::Ended {
            member: 0,
            status: killed(11),
        },
        t(2.0),
    );
    assert!(
        warned(&said, log::Level::Error, &format!("giving it up ({STDERR_LOST})")),
        "{said:?}"
    );
}

#[test]
fn during_the_launch_any_end_or_stop_ends_the_run() {
    let mut s = Supervisor::new(policy(RestartPolicy::Always), t(0.0));
    s.handle(
        Event::Started {
            member: 0,
            pid: pid(11),
            group: pid(11),
        },
        t(0.0),
    );
    let end = s.handle(
        Event::Ended {
            member: 0,
            status: WaitStatus::Exited(pid(11), 3),
        },
        t(0.1),
    );
    assert_eq!(
        end,
        [Action::End(Err(
            "node 'a' (pid 11) exited with status 3 before the ring was ready".into()
        ))]
    );
    for (sig, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 0), (Signal::SIGHUP, 0)] {
        let mut s = Supervisor::new(policy(RestartPolicy::Always), t(0.0));
        assert_eq!(s.handle(Event::Stop(sig), t(0.1)), [Action::End(Ok(code))]);
        // The run is ending; the nodes are not told to stop yet: nothing
        // to kill.
        assert_eq!(s.handle(Event::Stop(sig), t(0.2)), []);
    }
}

#[test]
fn once_the_run_ends_later_ends_are_only_recorded() {
    let mut s = watching(policy(RestartPolicy::Always));
    assert_eq!(s.handle(Event::Stop(Signal::SIGTERM), t(2.0)), [Action::End(Ok(0))]);
    // Reaped in the same wake-up: no restart for a ring being torn down.
    assert_eq!(
        s.handle(
            Event::Ended {
                member: 0,
                status: killed(11)
            },
            t(2.0)
        ),
        []
    );
    assert_eq!(s.state(0), State::Ended(killed(11)));
}

#[test]
fn readiness_counts_only_from_the_current_process() {
    let mut s = Supervisor::new(policy(RestartPolicy::No), t(0.0));
    s.handle(
        Event::Started {
            member: 1,
            pid: pid(12),
            group: pid(10),
        },
        t(0.0),
    );
    assert_eq!(
        s.handle(
            Event::Ready {
                member: 1,
                pid: pid(99)
            },
            t(0.1)
        ),
        []
    );
    assert_eq!(
        s.state(1),
        State::Starting {
            pid: pid(12),
            group: pid(10)
        }
    );
    assert_eq!(
        s.handle(
            Event::Ready {
                member: 1,
                pid: pid(12)
            },
            t(0.1)
        )
        .len(),
        1
    );
    assert_eq!(
        s.handle(
            Event::Ready {
                member: 1,
                pid: pid(12)
            },
            t(0.2)
        ),
        [],
        "once"
    );
    assert_eq!(s.alive().collect::<Vec<_>>(), [(1, pid(12), pid(10))]);
}

#[test]
fn the_foreground_s_end_ends_the_run_with_its_code() {
    let mut s = watching(policy(RestartPolicy::Always));
    let end = s.handle(
        Event::Ended {
            member: 2,
            status: WaitStatus::Exited(pid(13), 4),
        },
        t(2.0),
    );
    let told = |m: &str| Action::Log(log::Level::Warn, format!("node 'c' (pid 13) {m}: {FOREGROUND_ENDS}"));
    assert_eq!(end, [told("exited with status 4"), Action::End(Ok(4))]);
    let mut s = watching(policy(RestartPolicy::No));
    assert_eq!(
        s.handle(
            Event::Ended {
                member: 2,
                status: killed(13)
            },
            t(2.0)
        ),
        [told("was killed by SIGKILL"), Action::End(Ok(137))]
    );
    // A clean end (--count reached) is the run's normal end: nothing told.
    let mut s = watching(policy(RestartPolicy::No));
    let end = s.handle(
        Event::Ended {
            member: 2,
            status: WaitStatus::Exited(pid(13), 0),
        },
        t(2.0),
    );
    assert_eq!(end, [Action::End(Ok(0))]);
}

#[test]
fn a_background_end_without_restart_is_told_and_the_run_goes_on_unless_fail_fast() {
    let mut s = watching(policy(RestartPolicy::No));
    let said = s.handle(
        Event::Ended {
            member: 0,
            status: killed(11),
        },
        t(2.0),
    );
    assert_eq!(
        said,
        [Action::Log(
            log::Level::Warn,
            "node 'a' (pid 11) was killed by SIGKILL".into()
        )]
    );
    assert_eq!(s.state(0), State::Ended(killed(11)));
    assert_eq!(s.alive().count(), 2);
    let mut s = watching(Policy {
        fail_fast: true,
        ..policy(RestartPolicy::No)
    });
    let said = s.handle(
        Event::Ended {
            member: 0,
            status: killed(11),
        },
        t(2.0),
    );
    assert_eq!(
        said.last(),
        Some(&Action::End(Err(
            "node 'a' (pid 11) was killed by SIGKILL (--fail-fast)".into()
        )))
    );
}

#[test]
fn a_dead_node_is_started_again_after_the_delay() {
    let mut s = watching(policy(RestartPolicy::OnFailure));
    // A clean end is not a failure: left dead, said.
    let said = s.handle(
        Event::Ended {
            member: 1,
            status: WaitStatus::Exited(pid(12), 0),
        },
        t(1.5),
    );
    assert!(warned(
        &said,
        log::Level::Warn,
        "node 'b' (pid 12) exited with status 0"
    ));
    assert_eq!(s.next_wake(), None);
    let said = s.handle(
        Event::Ended {
            member: 0,
            status: killed(11),
        },
        t(2.0),
    );
    assert!(warned(
        &said,
        log::Level::Warn,
        "node 'a' (pid 11) was killed by SIGKILL; restarting it (restart 1)"
    ));
    assert_eq!(
        s.state(0),
        State::Waiting {
            until: t(2.1),
            after: killed(11)
        }
    );
    assert_eq!(s.next_wake(), Some(t(2.1)));
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(2.05)), [], "not yet");
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(2.1)), [Action::Start(0)]);
    s.handle(
        Event::Started {
            member: 0,
            pid: pid(21),
            group: pid(10),
        },
        t(2.1),
    );
    assert_eq!(s.restarts(0), 1);
    // The old process's end, reaped late, is no news.
    assert_eq!(
        s.handle(
            Event::Ended {
                member: 0,
                status: killed(11)
            },
            t(2.2)
        ),
        []
    );
    assert_eq!(
        s.state(0),
        State::Starting {
            pid: pid(21),
            group: pid(10)
        }
    );
}

#[test]
fn a_node_that_dies_too_often_is_given_up() {
    let mut s = watching(policy(RestartPolicy::Always));
    // Burst 2 within 10 s: started at 0.1, then twice again; the third
    // death within the window gives it up.
    let mut p = 11;
    for (k, at) in [2.0, 3.0].into_iter().enumerate() {
        s.handle(
            Event::Ended {
                member: 0,
                status: killed(p),
            },
            t(at),
        );
        assert_eq!(
            s.handle(Event::Wake { received: Some(0) }, t(at + 0.1)),
            [Action::Start(0)]
        );
        p = 30 + k as i32;
        s.handle(
            Event::Started {
                member: 0,
                pid: pid(p),
                group: pid(10),
            },
            t(at + 0.1),
        );
    }
    let said = s.handle(
        Event::Ended {
            member: 0,
            status: killed(p),
        },
        t(4.0),
    );
    assert!(warned(
        &said,
        log::Level::Error,
        "and was restarted 2 times in 10s: giving it up"
    ));
    assert_eq!(s.state(0), State::GivenUp(killed(p)));
    assert_eq!(s.next_wake(), None, "nothing due");
    assert_eq!(s.restarts(0), 2);
    // With --fail-fast, giving up ends the run.
    let mut s = watching(Policy {
        fail_fast: true,
        restart: vec![
            Restart {
                burst: 0,
                ..policy(RestartPolicy::Always).restart[0]
            };
            3
        ],
        ..policy(RestartPolicy::Always)
    });
    let said = s.handle(
        Event::Ended {
            member: 0,
            status: killed(11),
        },
        t(2.0),
    );
    assert!(matches!(said.last(), Some(Action::End(Err(m))) if m.ends_with("giving it up (--fail-fast)")));
}

#[test]
fn the_foreground_is_restarted_when_asked_to_be() {
    let mut s = watching(Policy {
        restart: vec![
            Restart {
                foreground: true,
                ..policy(RestartPolicy::Always).restart[0]
            };
            3
        ],
        ..policy(RestartPolicy::Always)
    });
    let said = s.handle(
        Event::Ended {
            member: 2,
            status: killed(13),
        },
        t(2.0),
    );
    assert!(warned(&said, log::Level::Warn, "restarting it"));
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(2.1)), [Action::Start(2)]);
}

#[test]
fn reports_come_once_a_second_while_the_ring_runs() {
    let mut s = Supervisor::new(
        Policy {
            ticking: true,
            ..policy(RestartPolicy::No)
        },
        t(0.0),
    );
    assert_eq!(s.next_wake(), Some(t(10.0)), "the launch's deadline, no ticks");
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(0.5)), []);
    s.watch(t(1.0));
    assert_eq!(s.next_wake(), Some(t(1.0)));
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(1.0)), [Action::Report]);
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(1.5)), []);
    assert_eq!(s.next_wake(), Some(t(2.0)));
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(2.0)), [Action::Report]);
    s.stop(t(2.5), Duration::from_secs(5));
    assert_eq!(s.next_wake(), None, "no ticks in the teardown (and no one alive)");
}

/// A ring that is watched for silence (2 s), restarts always, and ticks.
fn healing_ring() -> Supervisor {
    watching(Policy {
        ticking: true,
        healing: Some((Duration::from_secs(2), false)),
        ..policy(RestartPolicy::Always)
    })
}

#[test]
fn a_ring_silent_since_a_restart_gets_its_chain_again_once() {
    let mut s = healing_ring();
    assert_eq!(s.handle(Event::Wake { received: Some(10) }, t(1.0)), [Action::Report]);
    // b dies with the message; it is restarted; nothing moves from then on.
    s.handle(
        Event::Ended {
            member: 1,
            status: killed(12),
        },
        t(1.2),
    );
    assert_eq!(s.handle(Event::Wake { received: Some(10) }, t(1.3)), [Action::Start(1)]);
    s.handle(
        Event::Started {
            member: 1,
            pid: pid(22),
            group: pid(10),
        },
        t(1.3),
    );
    assert_eq!(s.handle(Event::Wake { received: Some(10) }, t(2.0)), [Action::Report]);
    let third = s.handle(Event::Wake { received: Some(10) }, t(3.0));
    assert_eq!(
        third,
        [
            Action::Report,
            Action::Reinject(Reinject::AfterRestart {
                silent: Duration::from_secs(2)
            })
        ]
    );
    s.handle(Event::Reinjected, t(3.0));
    assert_eq!(s.reinjections(), 1);
    assert_eq!(
        s.handle(Event::Wake { received: Some(10) }, t(4.0)),
        [Action::Report],
        "once per silence"
    );
    assert_eq!(
        s.handle(Event::Wake { received: Some(11) }, t(5.0)),
        [Action::Report],
        "it moves again"
    );
}

#[test]
fn a_ring_with_a_member_that_reports_no_counts_is_never_judged_silent() {
    // A program that sends no STATUS= (the C node, the seed's): the totals
    // say nothing of the ring's progress, so no silence is ever seen.
    let mut s = healing_ring();
    assert_eq!(s.handle(Event::Wake { received: None }, t(1.0)), [Action::Report]);
    s.handle(
        Event::Ended {
            member: 1,
            status: killed(12),
        },
        t(1.2),
    );
    assert_eq!(s.handle(Event::Wake { received: None }, t(1.3)), [Action::Start(1)]);
    s.handle(
        Event::Started {
            member: 1,
            pid: pid(22),
            group: pid(10),
        },
        t(1.3),
    );
    for at in [2.0, 3.0, 4.0, 10.0, 60.0] {
        assert_eq!(
            s.handle(Event::Wake { received: None }, t(at)),
            [Action::Report],
            "at {at} s"
        );
    }
    assert_eq!(s.reinjections(), 0);
}

#[test]
fn each_member_is_restarted_as_its_own_policy_says() {
    // a: no restart; b: on-failure, burst 0 (given up at once); c (the
    // foreground): always, and restarted as the foreground.
    let base = policy(RestartPolicy::No).restart[0];
    let mut s = watching(Policy {
        restart: vec![
            base,
            Restart {
                policy: RestartPolicy::OnFailure,
                burst: 0,
                ..base
            },
            Restart {
                policy: RestartPolicy::Always,
                delay: Duration::from_secs(1),
                foreground: true,
                ..base
            },
        ],
        ..policy(RestartPolicy::No)
    });
    let a = s.handle(
        Event::Ended {
            member: 0,
            status: killed(11),
        },
        t(2.0),
    );
    assert!(warned(&a, log::Level::Warn, "node 'a' (pid 11) was killed by SIGKILL"));
    assert_eq!(s.state(0), State::Ended(killed(11)), "a stays dead");
    let b = s.handle(
        Event::Ended {
            member: 1,
            status: killed(12),
        },
        t(2.0),
    );
    assert!(warned(&b, log::Level::Error, "giving it up"));
    let c = s.handle(
        Event::Ended {
            member: 2,
            status: WaitStatus::Exited(pid(13), 0),
        },
        t(2.0),
    );
    assert!(warned(&c, log::Level::Warn, "restarting it (restart 1)"), "{c:?}");
    assert_eq!(s.handle(Event::Wake { received: None }, t(2.5)), []);
    assert_eq!(s.handle(Event::Wake { received: None }, t(3.0)), [Action::Start(2)]);
}

#[test]
fn in_the_teardown_ends_are_recorded_and_a_second_stop_kills() {
    let mut s = watching(policy(RestartPolicy::Always));
    s.stop(t(2.0), Duration::from_secs(5));
    assert_eq!(s.next_wake(), Some(t(7.0)), "the end of the grace");
    assert_eq!(
        s.handle(
            Event::Ended {
                member: 2,
                status: killed(13)
            },
            t(2.0)
        ),
        []
    );
    assert_eq!(s.state(2), State::Ended(killed(13)));
    assert_eq!(
        s.handle(
            Event::Ended {
                member: 0,
                status: killed(11)
            },
            t(2.0)
        ),
        [],
        "no restart"
    );
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(3.0)), []);
    assert_eq!(
        s.handle(Event::Stop(Signal::SIGINT), t(3.5)),
        [
            Action::Log(
                log::Level::Info,
                "a second stop signal: sending SIGKILL to 1 node".into()
            ),
            Action::Kill(vec![(1, pid(12))])
        ]
    );
    assert_eq!(s.handle(Event::Stop(Signal::SIGINT), t(3.6)), [], "once");
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(9.0)), []);
}

#[test]
fn a_stop_before_the_teardown_kills_no_one_and_the_grace_still_ends() {
    let mut s = watching(policy(RestartPolicy::No));
    assert_eq!(s.handle(Event::Stop(Signal::SIGINT), t(2.0)), [Action::End(Ok(130))]);
    assert_eq!(s.handle(Event::Stop(Signal::SIGTERM), t(2.0)), [], "the same wake-up");
    s.stop(t(2.0), Duration::from_secs(1));
    let actions = s.handle(Event::Wake { received: Some(0) }, t(3.0));
    assert_eq!(
        actions.last(),
        Some(&Action::Kill(vec![(0, pid(11)), (1, pid(12)), (2, pid(13))]))
    );
}

#[test]
fn the_grace_period_ends_with_sigkill_for_whoever_ignored_sigterm() {
    let mut s = watching(policy(RestartPolicy::No));
    s.stop(t(2.0), Duration::from_secs(5));
    s.handle(
        Event::Ended {
            member: 0,
            status: killed(11),
        },
        t(2.1),
    );
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(6.9)), []);
    assert_eq!(
        s.handle(Event::Wake { received: Some(0) }, t(7.0)),
        [
            Action::Log(log::Level::Warn, "node 'b' ignored SIGTERM; sending SIGKILL".into()),
            Action::Log(log::Level::Warn, "node 'c' ignored SIGTERM; sending SIGKILL".into()),
            Action::Kill(vec![(1, pid(12)), (2, pid(13))])
        ]
    );
    assert_eq!(s.next_wake(), None, "killed once");
    // --grace 0: killed at once, said once for all.
    let mut s = watching(policy(RestartPolicy::No));
    s.stop(t(2.0), Duration::ZERO);
    assert_eq!(
        s.handle(Event::Wake { received: Some(0) }, t(2.0)),
        [
            Action::Log(log::Level::Info, "--grace 0: sending SIGKILL to 3 nodes".into()),
            Action::Kill(vec![(0, pid(11)), (1, pid(12)), (2, pid(13))])
        ]
    );
}

#[test]
fn exit_codes_follow_the_shell_s_conventions() {
    assert_eq!(stop_code(Signal::SIGTERM), 0);
    assert_eq!(stop_code(Signal::SIGHUP), 0);
    assert_eq!(stop_code(Signal::SIGINT), 130);
    assert_eq!(status_code(WaitStatus::Exited(pid(1), 3)), 3);
    assert_eq!(status_code(killed(1)), 137);
}

#[test]
fn a_launcher_that_did_not_start_the_ring_never_sends_its_chain() {
    // --no-start with restarts: no healing rule, however long the silence.
    let mut s = watching(Policy {
        ticking: true,
        healing: healing::rule(false, true, false, Duration::from_millis(100), Duration::ZERO),
        ..policy(RestartPolicy::Always)
    });
    s.handle(
        Event::Ended {
            member: 0,
            status: killed(11),
        },
        t(1.5),
    );
    assert_eq!(
        s.handle(Event::Wake { received: Some(0) }, t(1.6)),
        [Action::Start(0), Action::Report]
    );
    s.handle(
        Event::Started {
            member: 0,
            pid: pid(21),
            group: pid(10),
        },
        t(1.6),
    );
    for at in 2..60 {
        let actions = s.handle(Event::Wake { received: Some(0) }, t(at as f64));
        assert!(actions.iter().all(|a| *a == Action::Report), "at {at} s: {actions:?}");
    }
    assert_eq!(s.reinjections(), 0);
}

#[test]
fn a_reader_gone_from_stdout_ends_the_run_normally() {
    let mut s = watching(policy(RestartPolicy::Always));
    let actions = s.handle(Event::OutputGone, t(2.0));
    assert_eq!(actions.last(), Some(&Action::End(Ok(0))));
    s.stop(t(2.0), Duration::from_secs(5));
    // The nodes that found it gone too end on their own: recorded only.
    assert_eq!(
        s.handle(
            Event::Ended {
                member: 0,
                status: killed(11)
            },
            t(2.0)
        ),
        []
    );
    assert_eq!(s.handle(Event::OutputGone, t(2.1)), []);
}

#[test]
fn a_ring_with_a_given_up_node_is_not_sent_its_chain_again() {
    // A ring across hosts falls silent when b, given up at once (burst 0),
    // holds the message: the chain would only end in b's queue again.
    let mut s = watching(Policy {
        ticking: true,
        healing: Some((Duration::from_secs(2), true)),
        restart: vec![
            Restart {
                burst: 0,
                ..policy(RestartPolicy::Always).restart[0]
            };
            3
        ],
        ..policy(RestartPolicy::Always)
    });
    assert_eq!(s.handle(Event::Wake { received: Some(10) }, t(1.0)), [Action::Report]);
    s.handle(
        Event::Ended {
            member: 1,
            status: killed(12),
        },
        t(1.2),
    );
    for at in [2.0, 3.0, 4.0, 5.0] {
        assert_eq!(s.handle(Event::Wake { received: Some(10) }, t(at)), [Action::Report]);
    }
    let said = s.handle(Event::Wake { received: Some(10) }, t(6.0));
    assert!(
        warned(
            &said,
            log::Level::Warn,
            "and node 'b' was given up: not starting the chain again"
        ),
        "{said:?}"
    );
    assert!(!said.iter().any(|a| matches!(a, Action::Reinject(_))));
    assert_eq!(
        s.handle(Event::Wake { received: Some(10) }, t(7.0)),
        [Action::Report],
        "said once"
    );
    assert_eq!(s.reinjections(), 0);
}

#[test]
fn a_launch_that_outlasts_the_ready_timeout_names_the_late_nodes() {
    let mut s = Supervisor::new(policy(RestartPolicy::No), t(0.0));
    assert_eq!(s.next_wake(), Some(t(10.0)), "the deadline");
    for i in 0..3 {
        s.handle(
            Event::Started {
                member: i,
                pid: pid(11 + i as i32),
                group: pid(10),
            },
            t(0.1),
        );
    }
    s.handle(
        Event::Ready {
            member: 1,
            pid: pid(12),
        },
        t(0.2),
    );
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(9.9)), []);
    assert_eq!(
        s.handle(Event::Wake { received: Some(0) }, t(10.0)),
        [Action::End(Err(
            "node 'a' and 1 more not ready after --ready-timeout 10.0s".into()
        ))]
    );
    let mut s = Supervisor::new(policy(RestartPolicy::No), t(0.0));
    for i in 0..3 {
        let p = pid(11 + i as i32);
        s.handle(
            Event::Started {
                member: i,
                pid: p,
                group: pid(10),
            },
            t(0.1),
        );
        if i != 2 {
            s.handle(Event::Ready { member: i, pid: p }, t(0.2));
        }
    }
    assert_eq!(
        s.handle(Event::Wake { received: Some(0) }, t(11.0)),
        [Action::End(
            Err("node 'c' not ready after --ready-timeout 10.0s".into())
        )]
    );
    // All ready in time: no end, and no deadline once the ring runs.
    let mut s = watching(policy(RestartPolicy::No));
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(20.0)), []);
    assert_eq!(s.next_wake(), None);
}

#[test]
fn ctrl_z_stops_the_ring_with_the_launcher_and_sigcont_continues_it() {
    for mut s in [
        Supervisor::new(policy(RestartPolicy::No), t(0.0)),
        watching(policy(RestartPolicy::No)),
    ] {
        let actions = s.handle(Event::Suspend(Signal::SIGTSTP), t(2.0));
        assert_eq!(actions.last(), Some(&Action::Suspend));
        assert_eq!(s.handle(Event::Resume, t(3.0)), [Action::Resume]);
    }
    // A stop changes no member's state, and no restart comes of it.
    let mut s = watching(policy(RestartPolicy::Always));
    s.handle(Event::Suspend(Signal::SIGTTOU), t(2.0));
    assert_eq!(s.alive().count(), 3);
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(60.0)), []);
}

/// Member `i` was started again as `p` at `at`.
fn started(s: &mut Supervisor, i: usize, p: i32, at: f64) {
    s.handle(
        Event::Started {
            member: i,
            pid: pid(p),
            group: pid(10),
        },
        t(at),
    );
}

#[test]
fn a_node_a_user_stops_stays_stopped_whatever_the_policy() {
    let mut s = watching(policy(RestartPolicy::Always));
    let (said, actions) = s.act(0, Act::Stop, t(2.0)).unwrap();
    assert_eq!(said, "stopping 'a' (pid 11)");
    assert_eq!(
        actions,
        [Action::Terminate {
            member: 0,
            pid: pid(11)
        }]
    );
    let status = WaitStatus::Exited(pid(11), 0);
    let ended = s.handle(Event::Ended { member: 0, status }, t(2.1));
    assert!(warned(
        &ended,
        log::Level::Info,
        "node 'a' (pid 11) exited with status 0, as asked"
    ));
    assert!(!ended.iter().any(|a| matches!(a, Action::Start(_) | Action::End(_))));
    assert_eq!(s.state(0), State::Stopped(Some(status)));
    assert_eq!((s.changed(0), s.changed(1)), (t(2.1), t(0.2)), "when each last changed");
    assert_eq!(
        s.handle(Event::Wake { received: Some(0) }, t(60.0)),
        [],
        "never restarted"
    );
    assert_eq!(s.act(0, Act::Stop, t(61.0)).unwrap().0, "'a' is stopped already");
    // Started by hand, it counts as a first start, not a restart.
    assert_eq!(
        s.act(0, Act::Start, t(62.0)).unwrap(),
        ("starting 'a'".into(), vec![Action::Start(0)])
    );
    started(&mut s, 0, 31, 62.0);
    assert_eq!(s.restarts(0), 0);
    assert_eq!(
        s.act(0, Act::Start, t(63.0)).unwrap().0,
        "'a' is running already (pid 31)"
    );
}

#[test]
fn stopping_the_foreground_by_hand_does_not_end_the_run() {
    let mut s = watching(policy(RestartPolicy::No));
    s.act(2, Act::Stop, t(2.0)).unwrap();
    let ended = s.handle(
        Event::Ended {
            member: 2,
            status: killed(13),
        },
        t(2.1),
    );
    assert!(!ended.iter().any(|a| matches!(a, Action::End(_))), "{ended:?}");
    assert_eq!(s.state(2), State::Stopped(Some(killed(13))));
}

#[test]
fn a_restart_by_hand_starts_at_once_and_the_burst_limit_never_sees_it() {
    // Burst 2 in 10 s: a user restarting a node five times in five seconds
    // is no failure; a crash after that is still restarted.
    let mut s = watching(policy(RestartPolicy::OnFailure));
    let mut p = 11;
    for k in 0..5 {
        let at = 2.0 + k as f64;
        let (said, actions) = s.act(0, Act::Restart, t(at)).unwrap();
        assert_eq!(said, format!("restarting 'a' (pid {p})"));
        assert_eq!(actions, [Action::Terminate { member: 0, pid: pid(p) }]);
        // A second ask while it stops changes nothing.
        assert_eq!(s.act(0, Act::Restart, t(at)).unwrap().1, []);
        let ended = s.handle(
            Event::Ended {
                member: 0,
                status: WaitStatus::Signaled(pid(p), Signal::SIGTERM, false),
            },
            t(at + 0.1),
        );
        assert_eq!(ended.last(), Some(&Action::Start(0)), "at once, no --restart-delay");
        p = 40 + k;
        started(&mut s, 0, p, at + 0.1);
    }
    let crashed = s.handle(
        Event::Ended {
            member: 0,
            status: killed(p),
        },
        t(7.5),
    );
    assert!(
        warned(&crashed, log::Level::Warn, "restarting it (restart 1)"),
        "{crashed:?}"
    );
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(7.6)), [Action::Start(0)]);
}

#[test]
fn a_given_up_or_waiting_node_can_be_started_or_stopped_by_hand() {
    let mut s = watching(Policy {
        restart: vec![
            Restart {
                burst: 0,
                ..policy(RestartPolicy::Always).restart[0]
            };
            3
        ],
        ..policy(RestartPolicy::Always)
    });
    s.handle(
        Event::Ended {
            member: 0,
            status: killed(11),
        },
        t(2.0),
    );
    assert_eq!(s.state(0), State::GivenUp(killed(11)));
    assert_eq!(s.act(0, Act::Restart, t(3.0)).unwrap().1, [Action::Start(0)]);
    started(&mut s, 0, 31, 3.0);
    // A node waiting for its restart delay: stopped, it is not restarted.
    let mut s = watching(policy(RestartPolicy::Always));
    s.handle(
        Event::Ended {
            member: 1,
            status: killed(12),
        },
        t(2.0),
    );
    assert!(matches!(s.state(1), State::Waiting { .. }));
    assert_eq!(
        s.act(1, Act::Stop, t(2.05)).unwrap().0,
        "'b' is not running: left stopped"
    );
    assert_eq!(s.handle(Event::Wake { received: Some(0) }, t(2.2)), []);
    assert_eq!(s.state(1), State::Stopped(Some(killed(12))));
}

#[test]
fn nothing_is_asked_of_a_ring_that_is_starting_or_stopping() {
    let mut s = Supervisor::new(policy(RestartPolicy::No), t(0.0));
    assert_eq!(s.act(0, Act::Stop, t(0.1)), Err("the ring is still starting".into()));
    let mut s = watching(policy(RestartPolicy::No));
    s.stop(t(2.0), Duration::from_secs(5));
    assert_eq!(s.act(0, Act::Start, t(2.1)), Err("the ring is stopping".into()));
    // A node told to stop by a user and then by the teardown just ended.
    let mut s = watching(policy(RestartPolicy::Always));
    s.act(0, Act::Restart, t(2.0)).unwrap();
    s.stop(t(2.1), Duration::from_secs(5));
    assert_eq!(
        s.handle(
            Event::Ended {
                member: 0,
                status: killed(11)
            },
            t(2.2)
        ),
        []
    );
    assert_eq!(s.state(0), State::Ended(killed(11)));
}

#[test]
fn a_ring_with_a_node_stopped_by_hand_is_not_sent_its_chain_again() {
    // The chain waits in b's queue while b is stopped: sending it again
    // would make two once b starts.
    let mut s = healing_ring();
    assert_eq!(s.handle(Event::Wake { received: Some(10) }, t(1.0)), [Action::Report]);
    s.act(1, Act::Restart, t(1.1)).unwrap();
    s.handle(
        Event::Ended {
            member: 1,
            status: killed(12),
        },
        t(1.2),
    );
    started(&mut s, 1, 22, 1.2);
    s.act(1, Act::Stop, t(1.3)).unwrap();
    s.handle(
        Event::Ended {
            member: 1,
            status: killed(22),
        },
        t(1.4),
    );
    assert_eq!(s.handle(Event::Wake { received: Some(10) }, t(2.0)), [Action::Report]);
    let said = s.handle(Event::Wake { received: Some(10) }, t(3.0));
    assert!(
        warned(
            &said,
            log::Level::Warn,
            "and node 'b' is stopped: not starting the chain again"
        ),
        "{said:?}"
    );
    assert!(!said.iter().any(|a| matches!(a, Action::Reinject(_))));
}

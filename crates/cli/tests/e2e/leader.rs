//! Leader election against the real API server: one leader among two replicas, failover after
//! kill -9 within the Lease duration, and a SIGTERMed leader that releases the Lease and exits
//! at once, every time.

use crate::harness::{Env, JOB_TIMEOUT, chain_job, lease_holder, running_worker, wait_for_holder};
use nix::sys::signal::Signal;
use std::time::Duration;

/// The operator's default Lease duration plus its retry period (docs/operator.md).
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

#[tokio::test]
async fn two_operators_elect_one_leader_and_kill_dash_nine_fails_over_within_the_lease() {
    let mut env = Env::new("failover").await;
    env.start_operator("op-a");
    wait_for_holder(&env, "op-a", Duration::from_secs(30)).await;
    env.start_operator("op-b");
    env.apply_yaml(&chain_job("relay", 3));
    running_worker(&env, "relay", JOB_TIMEOUT).await;
    assert_eq!(lease_holder(&env).await.as_deref(), Some("op-a"), "the standby must not take a held Lease");

    env.signal_operator("op-a", Signal::SIGKILL);
    let took = wait_for_holder(&env, "op-b", LEASE_DURATION + RETRY_PERIOD * 3).await;
    eprintln!("failover after kill -9: the standby led after {:.1} s", took.as_secs_f64());
    env.wait_job("relay", "Succeeded", JOB_TIMEOUT).await;
    env.assert_each_task_committed_once(3).await;
}

#[tokio::test]
async fn a_sigtermed_leader_releases_the_lease_and_exits_promptly_twenty_times() {
    let mut env = Env::new("sigterm").await;
    env.start_operator("op-a");
    wait_for_holder(&env, "op-a", Duration::from_secs(30)).await;
    env.start_operator("op-b");
    let mut worst_exit = Duration::ZERO;
    let mut worst_takeover = Duration::ZERO;
    for round in 0..20 {
        let leader = lease_holder(&env).await.expect("a leader");
        let standby = if leader == "op-a" { "op-b" } else { "op-a" };
        let started = std::time::Instant::now();
        env.signal_operator(&leader, Signal::SIGTERM);
        let status = env.wait_operator_exit(&leader, Duration::from_secs(10)).await;
        let exited = started.elapsed();
        assert!(
            status.is_some(),
            "round {round}: {leader} did not exit within 10 s of SIGTERM\n{}",
            env.operator_log(&leader)
        );
        assert!(status.is_some_and(|s| s.success()), "round {round}: {leader} exited with {status:?}");
        // Released, so the standby takes it at its next try, not after the Lease expires.
        wait_for_holder(&env, standby, RETRY_PERIOD * 3).await;
        worst_exit = worst_exit.max(exited);
        worst_takeover = worst_takeover.max(started.elapsed());
        env.start_operator(&leader);
    }
    eprintln!(
        "20 SIGTERMs: slowest exit {:.2} s, slowest takeover {:.2} s",
        worst_exit.as_secs_f64(),
        worst_takeover.as_secs_f64()
    );
}

//! The control plane itself restarted mid-Job (an upgrade, an etcd outage): on a bed of its
//! own, so the other tests do not see the outage.

use crate::harness::{Env, JOB_TIMEOUT, chain_job, image_dir, running_worker, start_bed};

// Multi-threaded: the bed's test node runs on this test's runtime, and kubectl calls block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_and_etcd_restarted_mid_job_and_the_job_completes() {
    let images = image_dir();
    let bed = start_bed(images.path()).await.expect("a bed of its own");
    {
        let mut env = Env::on(&bed, "restart").await;
        env.start_operator("op-a");
        env.apply_yaml(&chain_job("survivor", 3));
        running_worker(&env, "survivor", JOB_TIMEOUT).await;
        bed.control_plane().restart_apiserver_and_etcd().await.expect("restarted");
        env.wait_job("survivor", "Succeeded", JOB_TIMEOUT).await;
        env.assert_each_task_committed_once(3).await;
    }
}

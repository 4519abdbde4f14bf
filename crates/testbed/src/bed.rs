//! A whole test bed in one value: a [`ControlPlane`] and a [`TestNode`] named `testnode`.

use crate::node::{TestNode, TestNodeOptions};
use crate::{ControlPlane, ControlPlaneOptions, Result};
use kube::Client;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// The test node's name in a [`Bed`].
pub const NODE_NAME: &str = "testnode";

/// How to start a [`Bed`].
#[derive(Debug, Clone, Default)]
pub struct BedOptions {
    /// Image reference → local executable, for the test node.
    pub images: BTreeMap<String, PathBuf>,
    /// The control plane's options (directory, binaries).
    pub control_plane: ControlPlaneOptions,
}

/// A control plane with a test node. Dropping it stops the node (killing its pods' processes),
/// then the control plane (the fields' declaration order).
///
/// The node runs on the runtime that started the bed: a test that blocks its thread (running
/// `kubectl` with `std::process::Command`, say) needs a multi-threaded runtime, or the node
/// cannot answer meanwhile (`kubectl logs` would time out).
pub struct Bed {
    // Dropped in declaration order: the node first.
    node: TestNode,
    control_plane: ControlPlane,
    client: Client,
}

impl Bed {
    /// Starts the control plane, then the test node.
    pub async fn start(options: BedOptions) -> Result<Self> {
        let control_plane = ControlPlane::start(options.control_plane).await?;
        let client = control_plane.client().await?;
        let node_options = TestNodeOptions::for_control_plane(&control_plane, NODE_NAME, options.images);
        let node = TestNode::start(client.clone(), node_options).await?;
        Ok(Self { node, control_plane, client })
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The pinned `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        self.control_plane.kubectl()
    }

    /// The control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// The control plane, to restart parts of it.
    pub fn control_plane_mut(&mut self) -> &mut ControlPlane {
        &mut self.control_plane
    }

    /// The test node.
    pub fn node(&self) -> &TestNode {
        &self.node
    }

    /// Stops the node (waiting for its pods' processes to end), then the control plane.
    pub async fn stop(mut self) {
        self.node.stop().await;
        self.control_plane.stop();
    }
}

impl std::fmt::Debug for Bed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bed")
            .field("node", &self.node)
            .field("control_plane", &self.control_plane)
            .finish_non_exhaustive()
    }
}

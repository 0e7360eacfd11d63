//! Helpers for the end-to-end tests: real `kubectl` against the testbed.
//!
//! The tests run only against a testbed on loopback: `FIREDRILL_TESTBED_KUBECONFIG`
//! must name its kubeconfig (`make test` sets it), and the API server in it
//! must be on 127.0.0.0/8 or [::1]. Anything else panics before a single
//! command is sent, so these tests can never touch a real cluster.
//!
//! By concern:
//!
//! - `kubectl`: running kubectl, and the loopback-only kubeconfig check;
//! - `testbed`: the repository, the testbed's script and its helm, the CRDs
//!   and the workloads most drills run against;
//! - `guards`: the lock by which tests share the testbed, and cleanups that
//!   run when a test ends;
//! - `manifests`: the DataCenterFailure builder and the other manifests;
//! - `cluster`: reading the cluster, and assertions on what a drill left;
//! - `wait`: polling;
//! - `operator`: the `firedrill` binary and the operator as a process;
//! - `images`: the images `make image` builds;
//! - `real`: the testbed's real nodes, and what their containerd runs.
//!
//! Everything the tests use is re-exported here.

mod cluster;
mod guards;
mod images;
mod kubectl;
mod manifests;
mod operator;
mod real;
mod testbed;
mod wait;

pub use cluster::{
    assert_nodes_untouched, assert_zone_restored, cordoned_nodes, dcf_field, events_with_reason,
    firedrill_taints, firedrill_traces_on_nodes, marked_zones, node_zones, nodes_in, pod_uids,
    ready_endpoints, ready_pods,
};
pub use guards::{
    AdminCordon, Cleanup, Experiment, ExtraNode, Namespace, zones_lock, zones_lock_shared,
};
pub use images::{
    agent_image_archive, agent_image_rootfs, chroot_program, euid, image_archive, image_command,
    image_command_in, image_ref_name, image_rootfs, run_ok, unpack_image,
};
pub use kubectl::{Output, apply, kubectl, kubectl_json};
pub use manifests::{
    Drill, Slo, chat_and_login, kwok_node_yaml, ledger, service_and_deployment, spread_over_zones,
};
pub use operator::{Operator, firedrill, firedrill_bin, http_get};
pub use real::{RealNode, machine_sysctls, real_node, real_nodes};
pub use testbed::{helm, helm_bin, install_crds, repo_root, setup_chat_and_login, testbed};
pub use wait::{wait_completed, wait_for, wait_phase};

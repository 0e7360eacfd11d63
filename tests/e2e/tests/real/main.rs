//! End-to-end tests on the testbed's real nodes (`testbed.sh up 0 --real 3`:
//! one kubelet, containerd and kube-proxy per zone; see
//! tests/testbed/realnodes.sh). The drills here kill real containers and cut
//! real nodes off their network, and every test asserts what the nodes
//! themselves say: containerd's tasks, the nft table in the node's network
//! namespace, the kubelet's Ready condition.
//!
//! By concern:
//! - `workloads`: the serving workloads the drills run against, on real
//!   containers behind real kube-proxy;
//! - `kill`: CordonAndKill on a real zone;
//! - `power`: PowerLoss on a real zone, cut by the chart's node agent;
//! - `uninstall`: `helm uninstall` while a drill holds a real zone dark;
//! - `demo`: `make demo-real`'s three runs of the Pangyo drill, on this
//!   suite's testbed.

mod demo;
mod kill;
mod power;
mod uninstall;
mod workloads;

//! The testbed's real nodes (`testbed.sh up N --real M`): where each one's
//! containerd listens and which network namespace is its own, read from the
//! list the testbed writes (`$FIREDRILL_TESTBED_DIR/real/nodes`), and what
//! runs there, asked of containerd itself with `ctr`.

use std::path::PathBuf;
use std::process::Command;

/// One real node of the testbed.
#[derive(Clone, Debug)]
pub struct RealNode {
    pub name: String,
    /// Its network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// Its containerd's socket.
    pub socket: String,
    pub zone: String,
}

fn state_dir() -> PathBuf {
    PathBuf::from(std::env::var("FIREDRILL_TESTBED_DIR").expect(
        "FIREDRILL_TESTBED_DIR is not set: the real-node tests run against a testbed started \
         with `tests/testbed/testbed.sh up 0 --real 3` (tests/run-e2e.sh does it)",
    ))
}

/// The testbed's real nodes; panics when it has none.
pub fn real_nodes() -> Vec<RealNode> {
    let file = state_dir().join("real/nodes");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: this testbed has no real nodes (start it with `testbed.sh up 0 --real 3`)",
            file.display()
        )
    });
    let nodes: Vec<RealNode> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| RealNode {
                name: f[0].into(),
                netns: f[1].into(),
                socket: f[2].into(),
                zone: f[4].into(),
            })
        })
        .collect();
    assert!(!nodes.is_empty(), "{} lists no node", file.display());
    nodes
}

/// The real node named `name`.
pub fn real_node(name: &str) -> RealNode {
    real_nodes()
        .into_iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("{name} is not a real node of the testbed"))
}

impl RealNode {
    /// `ctr -n k8s.io ARGS` against this node's containerd: its stdout.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .args(["-a", &self.socket, "-n", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr (Debian package containerd)");
        assert!(
            out.status.success(),
            "ctr {args:?} on {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The IDs of the containers containerd has on this node.
    pub fn containers(&self) -> Vec<String> {
        first_column(&self.ctr(&["containers", "ls"]))
    }

    /// The IDs of the tasks (running or stopped processes) on this node,
    /// with their status.
    pub fn tasks(&self) -> Vec<(String, String)> {
        self.ctr(&["tasks", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
            })
            .collect()
    }

    /// `nft ARGS` inside this node's network namespace: (success, output).
    pub fn nft(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("nft")
            .args(args)
            .output()
            .expect("nsenter and nft");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

fn first_column(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The machine's kernel.panic, kernel.panic_on_oops and vm.overcommit_memory,
/// which kubelet must never change.
pub fn machine_sysctls() -> String {
    [
        "kernel/panic",
        "kernel/panic_on_oops",
        "vm/overcommit_memory",
    ]
    .iter()
    .map(|p| {
        std::fs::read_to_string(format!("/proc/sys/{p}"))
            .unwrap()
            .trim()
            .to_string()
    })
    .collect::<Vec<_>>()
    .join(" ")
}

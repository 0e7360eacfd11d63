// An empty module so that `go install sigs.k8s.io/kwok/cmd/kwok@VERSION`
// (and helm's) runs in its own module graph, apart from the control plane's.
module firedrill.dev/testbed/kwok

go 1.26

"""The local test bed: a real Kubernetes control plane on loopback.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the
pinned Go modules under hack/tools, kwok for simulated CPU and GPU nodes, and a
process-backed node whose pods run as real local processes.  Used by the test
suite, the benchmarks and `swarmops demo`.
"""

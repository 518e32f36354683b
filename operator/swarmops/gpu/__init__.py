"""The GPU node agent (`swarmops gpu-agent`): NVML readings, their classification, and
what the agent publishes on its Node.

* `health`: pure classification of typed readings and XID events (no I/O).
* `report`: pure rendering of a classification into the node condition and annotation.
* `nvml`: the readings, through the real pynvml bindings (blocking; run in a thread).
* `agent`: the imperative shell: threads, the poll loop, the Kubernetes writes, metrics.
"""

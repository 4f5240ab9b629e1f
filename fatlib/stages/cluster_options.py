"""The options every Ray stage declares about where and how long it waits for the cluster
(one wording and one bound for preprocess, train and infer)."""

from __future__ import annotations

from typing import Any

from fatlib.core.cli import option

WAIT_SECONDS = 300.0  # an autoscaler starts a node in a few minutes


def wait_for_resources(what: str = "the resources asked for") -> Any:
    """The --wait-for-resources field: seconds to wait for `what` on a cluster joined by
    address."""
    return option(WAIT_SECONDS, "on a cluster joined by address (an autoscaler may add nodes): "
                  f"seconds to wait for {what} before failing; the embedded local Ray fails at "
                  "once", minimum=0, metavar="SECONDS")


def node_resource(work: str) -> Any:
    """The --node-resource field: `work` runs only on nodes offering this custom resource."""
    return option(None, f"{work} only on nodes offering this custom resource (cluster.yaml: "
                  "fatlib_cpu)", metavar="NAME")

"""Seeded, reproducible random AccessPolicy network specs over a fixed set of apps, for the probe matrix."""

import random
from typing import Any

from access_hygiene.models.policy import APP_LABEL

APPS = ("alpha", "beta", "gamma", "delta")
TIERS = ("front", "back")
# Numbered, named (the pods name 8080/TCP "http" and 8081/UDP "udp"), UDP, ranges, and "all ports".
PORT_CHOICES: tuple[list[dict[str, Any]], ...] = (
    [],
    [{"port": 8080}],
    [{"port": "http"}],
    [{"port": 8081, "protocol": "UDP"}],
    [{"port": "udp", "protocol": "UDP"}],
    [{"port": 8080}, {"port": "udp", "protocol": "UDP"}],
    [{"port": 8000, "endPort": 8090}],
)


def random_apps(
    seed: int, namespace: str, other_namespace: str
) -> tuple[dict[str, dict[str, str]], list[dict[str, Any]]]:
    """Pod labels per app, and AccessPolicies (enforce) for most of the apps: ingress and egress rules with peers by
    app, by label, by namespace (`other_namespace`) or by namespace and app; DNS and the API server at random."""
    rng = random.Random(seed)
    labels = {app: {APP_LABEL: app, "tier": rng.choice(TIERS)} for app in APPS}

    def peer() -> dict[str, Any]:
        kind = rng.randrange(4)
        if kind == 0:
            return {"app": rng.choice(APPS)}
        if kind == 1:
            return {"podSelector": {"matchLabels": {"tier": rng.choice(TIERS)}}}
        if kind == 2:
            return {"namespace": other_namespace}
        return {"namespace": namespace, "app": rng.choice(APPS)}

    def rules(key: str) -> list[dict[str, Any]]:
        result = []
        for _ in range(rng.randint(0, 2)):
            rule: dict[str, Any] = {key: [peer() for _ in range(rng.randint(1, 2))]}
            ports = rng.choice(PORT_CHOICES)
            if ports:
                rule["ports"] = ports
            result.append(rule)
        return result

    policies = []
    for app in APPS:
        if rng.random() < 0.2:
            continue  # no policy: the namespace's default deny alone
        network = {
            "ingress": rules("from"),
            "egress": rules("to"),
            "dns": rng.random() < 0.7,
            "kubeAPIServer": rng.random() < 0.3,
        }
        policies.append(
            {
                "apiVersion": "accesshygiene.io/v1alpha1",
                "kind": "AccessPolicy",
                "metadata": {"name": app, "namespace": namespace},
                "spec": {"network": network, "mode": "enforce"},
            }
        )
    return labels, policies

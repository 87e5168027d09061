"""What a control-plane snapshot means: selection, the merged config and its precedence, overrides,
sharding, drift, retirement thresholds and the quota hint (pure functions over frozen values)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest

from monitor import config as config_mod
from monitor.azure import inventory
from monitor.azure.arm import ArmDeployment, CatalogModel, Quota, RateLimit, Snapshot, from_json, to_json
from monitor.canary.fleet import build_targets

SUB = "00000000-0000-0000-0000-00000000000a"
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def dep(name: str, account: str = "team-a", **over: Any) -> ArmDeployment:
    base = ArmDeployment(
        subscription=SUB, resource_group="rg", account=account, location="eastus2", subdomain=account,
        account_tags={"env": "prod"}, name=name, model_format="Anthropic", model_name="claude-haiku-4-5",
        model_version="20251001", sku="GlobalStandard", capacity=50, current_capacity=50,
        provisioning_state="Succeeded", state="Running",
        rate_limits=(RateLimit("request", 60, 50), RateLimit("token", 60, 50_000)))
    return replace(base, **over)


def snap(*deps: ArmDeployment, retirement: date | None = None, quota: tuple[float, float] | None = None,
         ) -> Snapshot:
    catalog = (CatalogModel("eastus2", "claude-haiku-4-5", "20251001", "GenerallyAvailable", retirement),)
    quotas = (Quota(SUB, "eastus2", "AIServices.GlobalStandard.claude-haiku-4-5", *quota, "Count"),) \
        if quota else ()
    return Snapshot(NOW, deps, catalog, quotas)


def cfg(discovery: str, resources: str = "") -> config_mod.Config:
    text = f"defaults: {{interval: 60s}}\n{resources}discovery:\n{discovery}"
    return config_mod.loads(text, "checks.yaml", {})


BASIC = f"  subscriptions: [{SUB}]\n"


def test_only_claude_deployments_matching_tags_and_patterns_are_selected() -> None:
    lab = dep("lab", account="lab", account_tags={"env": "lab"})
    s = snap(dep("haiku"), dep("gpt", model_format="OpenAI"), lab, dep("haiku-canary-skip"))
    c = cfg(BASIC + "  tags: {env: prod}\n  exclude: ['*-skip']\n")
    assert c.discovery is not None
    assert [d.name for d in inventory.selected(s, c.discovery)] == ["haiku"]


def test_overrides_apply_the_first_matching_pattern_and_auth_is_entra_with_the_monitors_identity() -> None:
    c = cfg(BASIC + "  client_id: my-identity\n  overrides:\n    - {match: 'opus-*', interval: 5m}\n"
                    "    - {match: '*', interval: 2m, max_tokens: 2}\n")
    (res,) = inventory.resources(c, [dep("opus-1"), dep("haiku")])
    settings = {d.name: d.settings(c.defaults) for d in res.deployments}
    assert settings["opus-1"].interval == 300 and settings["opus-1"].max_tokens == 1
    assert settings["haiku"].interval == 120 and settings["haiku"].max_tokens == 2
    assert res.base_url == "https://team-a.services.ai.azure.com/anthropic/"
    assert res.auth is not None and res.auth.entra is not None and res.auth.entra.client_id == "my-identity"


def test_a_hand_listed_deployment_wins_and_a_taken_resource_name_gets_the_subscription() -> None:
    hand = ("resources:\n  - name: team-a\n    resource: team-a\n    auth: {api_key: k}\n"
            "    deployments: [{name: haiku}]\n")
    c = cfg(BASIC, hand)
    found = inventory.resources(c, [dep("haiku"), dep("sonnet")])
    assert [(r.name, [d.name for d in r.deployments]) for r in found] == [("team-a@00000000", ["sonnet"])]
    merged = inventory.merged(c, found)
    assert [(r.name, d.name) for r, d, _ in merged.targets()] == [("team-a", "haiku"),
                                                                  ("team-a@00000000", "sonnet")]


def test_paused_or_unprovisioned_deployments_are_listed_but_not_probed() -> None:
    c = cfg(BASIC)
    found = inventory.resources(c, [dep("paused", state="Paused"), dep("new", provisioning_state="Creating")])
    assert found == []
    rows = inventory.rows(snap(dep("paused", state="Paused")), c.discovery, NOW)
    assert rows[0]["monitored"] is False and rows[0]["state"] == "Paused"


def test_shards_split_discovered_deployments_like_hand_listed_ones() -> None:
    c = cfg(BASIC)
    merged = inventory.merged(c, inventory.resources(c, [dep(f"d{i:03d}") for i in range(200)]))
    shards = [{t.deployment for t in build_targets(merged, shard=(i, 3))} for i in range(3)]
    assert sum(len(s) for s in shards) == 200 and set.union(*shards) == {f"d{i:03d}" for i in range(200)}
    assert all(40 < len(s) < 95 for s in shards)


def test_drift_names_each_changed_field_with_before_and_after() -> None:
    c = cfg(BASIC)
    assert c.discovery is not None
    before = snap(dep("a"), dep("b"), dep("gone"))
    after = snap(dep("a", model_version="20260101", capacity=80), dep("b", sku="DataZoneStandard"),
                 dep("new"))
    changes = {(ch.kind, ch.deployment, ch.field): (ch.before, ch.after)
               for ch in inventory.drift(before, after, c.discovery)}
    assert changes[("drift", "a", "model_version")] == ("claude-haiku-4-5 20251001",
                                                        "claude-haiku-4-5 20260101")
    assert changes[("drift", "a", "capacity")] == ("50", "80")
    assert changes[("drift", "b", "sku")] == ("GlobalStandard", "DataZoneStandard")
    assert ("added", "new", None) in changes and ("removed", "gone", None) in changes
    assert inventory.drift(None, after, c.discovery) == []  # the first read is no change


@pytest.mark.parametrize(("days", "threshold"), [(120, None), (90, "90"), (31, "90"), (30, "30"), (8, "30"),
                                                 (7, "7"), (0, "7")])
def test_retirement_warns_at_the_tightest_threshold_crossed(days: int, threshold: str | None) -> None:
    c = cfg(BASIC)
    assert c.discovery is not None
    when = date.fromordinal(NOW.date().toordinal() + days)
    found = list(inventory.retirements(snap(dep("a"), retirement=when), c.discovery, NOW))
    assert [ch.field for ch in found] == ([threshold] if threshold else [])


def test_a_throttled_deployment_with_a_full_subscription_quota_points_at_the_shared_quota() -> None:
    d = dep("a")
    shared = inventory.quota_hint(d, snap(d, quota=(95, 100)), throttled=True)
    own = inventory.quota_hint(d, snap(d, quota=(10, 100)), throttled=True)
    assert shared is not None and "shared" in shared and "95 of 100" in shared
    assert own is not None and "own rate limits (50 requests/min, 50000 tokens/min)" in own
    assert inventory.quota_hint(d, snap(d, quota=(95, 100)), throttled=False) is None


def test_a_snapshot_survives_its_json_round_trip() -> None:
    s = snap(dep("a"), dep("b", state=None), retirement=date(2027, 1, 1), quota=(1, 2))
    assert from_json(to_json(s)) == s
    assert from_json({"taken_at": "garbage"}) is None

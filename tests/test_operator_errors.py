"""Condition messages stay short and stable: a real failing call to the real API server (a
403 and a 404 through the official client) is described without HTTP headers, audit ids or
dates, the same on every attempt, and a condition never exceeds the CRD's limit; and the
Lease decision of the leader election (core.leadership), pure."""

from __future__ import annotations

import asyncio
import uuid

import kubernetes
import pytest

from mt5fleet.operator.adapters.errors import MAX_MESSAGE, describe
from mt5fleet.operator.adapters.secret_store import KubernetesSecretStore
from mt5fleet.operator.core import reconcile
from mt5fleet.operator.core.leadership import LeaseRecord, LeaseTiming, Move, Observer, decide

pytestmark = pytest.mark.timeout(900)   # a cold cache builds the API server first


def failing_calls(kube_cluster) -> list[Exception]:
    """The same refused call twice, as a ServiceAccount with no Role at all."""
    kubeconfig = kube_cluster.service_account_kubeconfig(f"nobody-{uuid.uuid4().hex[:6]}", "nobody")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    store = KubernetesSecretStore(kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration)), "default")
    errors = []
    for _ in range(2):
        with pytest.raises(kubernetes.client.ApiException) as refused:
            asyncio.run(store.put("mt5fleet-agent-x", {"k": b"v"}))
        errors.append(refused.value)
    return errors


def test_a_refused_api_call_is_described_short_and_the_same_each_time(kube_cluster):
    first, second = failing_calls(kube_cluster)
    assert "Audit-Id" in str(first) and "Date" in str(first)   # what str() would have put in the status
    assert describe(first) == describe(second)                 # stable: a retry rewrites nothing
    text = describe(first)
    assert text.startswith("HTTP 403 Forbidden: secrets \"mt5fleet-agent-x\" is forbidden"), text
    assert "Audit-Id" not in text and "Date" not in text and "\n" not in text and len(text) <= MAX_MESSAGE


def test_other_errors_keep_their_first_line_and_are_capped():
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(ValueError("bad\nsecond line")) == "ValueError: bad"
    assert len(describe(RuntimeError("x" * 10_000))) == MAX_MESSAGE


def test_a_condition_message_stays_under_the_crds_limit():
    condition = reconcile._condition("Ready", False, "NotReconciled", "y" * 10_000)
    assert len(condition.message) == reconcile.MAX_CONDITION_MESSAGE < 4096


# ---------------------------------------------------------------------- the Lease decision
TIMING = LeaseTiming(lease_duration_s=15, renew_every_s=5, renew_deadline_s=10)


def test_a_free_or_own_lease_is_taken_a_live_one_is_not():
    observer = Observer()
    assert decide(LeaseRecord("", "1"), "me", observer, 0.0, TIMING) is Move.TAKE
    assert decide(LeaseRecord("me", "2"), "me", observer, 1.0, TIMING) is Move.TAKE
    assert decide(LeaseRecord("other", "3"), "me", observer, 2.0, TIMING) is Move.WAIT


def test_a_lease_expires_by_the_observers_clock_not_the_holders():
    observer = Observer()
    assert decide(LeaseRecord("other", "1"), "me", observer, 100.0, TIMING) is Move.WAIT
    assert decide(LeaseRecord("other", "2"), "me", observer, 114.0, TIMING) is Move.WAIT   # renewed: alive
    assert decide(LeaseRecord("other", "2"), "me", observer, 128.0, TIMING) is Move.WAIT   # 14 s unchanged
    assert decide(LeaseRecord("other", "2"), "me", observer, 129.5, TIMING) is Move.TAKE   # >15 s: expired


def test_lease_timing_is_checked():
    with pytest.raises(ValueError):
        LeaseTiming(lease_duration_s=5, renew_every_s=5, renew_deadline_s=4)
    assert LeaseTiming.from_duration(4, 1).renew_deadline_s == 2.5

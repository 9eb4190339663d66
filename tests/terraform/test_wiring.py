"""The Terraform module's wiring, read from the HCL (no cloud is reachable from the tests).

Asserts what must hold for pushes to be accepted and nothing else: the push token's audience
is the service's OIDC_AUDIENCE and a Cloud Run custom audience, the push service account is the
allowed email and the only invoker, the dead-letter IAM exists, the service scales to zero.
"""
import pathlib

import hcl2
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "terraform"


def load(path: pathlib.Path) -> dict:
    with open(path) as f:
        return hcl2.load(f)


def module() -> dict:
    merged: dict = {}
    for path in sorted(ROOT.glob("*.tf")):
        for key, blocks in load(path).items():
            merged.setdefault(key, []).extend(blocks)
    return merged


def one(value):
    """hcl2 wraps every attribute and block in a list."""
    if isinstance(value, list):
        assert len(value) == 1, value
        return value[0]
    return value


def resource(mod: dict, rtype: str, name: str) -> dict:
    for block in mod["resource"]:
        if rtype in block and name in block[rtype]:
            return block[rtype][name]
    raise AssertionError(f"{rtype}.{name} missing")


def resources(mod: dict, rtype: str) -> list:
    return [body for block in mod["resource"] if rtype in block for body in block[rtype].values()]


def variable(mod: dict, name: str) -> dict:
    for block in mod["variable"]:
        if name in block:
            return block[name]
    raise AssertionError(f"variable {name} missing")


def local_value(mod: dict, name: str):
    for block in mod["locals"]:
        if name in block:
            return one(block[name])
    raise AssertionError(f"local {name} missing")


@pytest.fixture(scope="module")
def mod() -> dict:
    return module()


def container(mod: dict) -> dict:
    service = resource(mod, "google_cloud_run_v2_service", "bridge")
    return one(one(service["template"])["containers"])


def test_every_tf_file_parses():
    files = list(ROOT.rglob("*.tf"))
    assert len(files) >= 5
    for path in files:
        assert load(path), path


def test_push_token_audience_is_the_services_oidc_audience(mod):
    oidc = one(one(resource(mod, "google_pubsub_subscription", "push")["push_config"])["oidc_token"])
    assert one(oidc["audience"]) == "${local.audience}"
    assert local_value(mod, "core_env")["OIDC_AUDIENCE"] == "${local.audience}"
    assert local_value(mod, "env").startswith("${merge(local.core_env")
    service = resource(mod, "google_cloud_run_v2_service", "bridge")
    assert one(service["custom_audiences"]) == ["${local.audience}"]


def test_push_service_account_is_the_allowed_email_and_the_token_signer(mod):
    assert local_value(mod, "core_env")["OIDC_ALLOWED_EMAILS"] == "${google_service_account.push.email}"
    oidc = one(one(resource(mod, "google_pubsub_subscription", "push")["push_config"])["oidc_token"])
    assert one(oidc["service_account_email"]) == "${google_service_account.push.email}"


def test_only_the_push_account_may_invoke_the_service(mod):
    invokers = resources(mod, "google_cloud_run_v2_service_iam_member")
    assert len(invokers) == 1
    invoker = invokers[0]
    assert one(invoker["role"]) == "roles/run.invoker"
    assert one(invoker["member"]) == "serviceAccount:${google_service_account.push.email}"
    assert one(invoker["name"]) == "${google_cloud_run_v2_service.bridge.name}"
    text = "".join(p.read_text() for p in ROOT.rglob("*.tf"))
    assert "allUsers" not in text and "allAuthenticatedUsers" not in text
    assert not resources(mod, "google_cloud_run_v2_service_iam_binding")


def test_dead_letter_policy_and_its_iam(mod):
    sub = resource(mod, "google_pubsub_subscription", "push")
    policy = one(sub["dead_letter_policy"])
    assert one(policy["dead_letter_topic"]) == "${google_pubsub_topic.dead_letter.id}"
    publisher = resource(mod, "google_pubsub_topic_iam_member", "pubsub_agent_publishes_dead_letters")
    assert one(publisher["role"]) == "roles/pubsub.publisher"
    assert one(publisher["topic"]) == "${google_pubsub_topic.dead_letter.name}"
    assert one(publisher["member"]) == "${local.pubsub_agent}"
    subscriber = resource(mod, "google_pubsub_subscription_iam_member", "pubsub_agent_acks_dead_letters")
    assert one(subscriber["role"]) == "roles/pubsub.subscriber"
    assert one(subscriber["subscription"]) == "${google_pubsub_subscription.push.name}"
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in local_value(mod, "pubsub_agent")
    max_attempts = one(variable(mod, "max_delivery_attempts")["default"])
    assert 5 <= max_attempts <= 100


def test_container_env_comes_from_the_merged_map(mod):
    c = container(mod)
    plain = [d["env"] for d in c["dynamic"] if "env" in d and "local.env" in str(d["env"])]
    assert plain, "env vars come from local.env"


def test_scales_to_zero_by_default(mod):
    assert one(variable(mod, "min_instances")["default"]) == 0
    scaling = one(one(resource(mod, "google_cloud_run_v2_service", "bridge")["template"])["scaling"])
    assert one(scaling["min_instance_count"]) == "${var.min_instances}"


def test_ack_deadline_exceeds_the_produce_timeout(mod):
    ack = one(variable(mod, "ack_deadline_seconds")["default"])
    produce = one(variable(mod, "kafka_produce_timeout_ms")["default"])
    request = one(variable(mod, "request_timeout_seconds")["default"])
    assert ack * 1000 > produce and request * 1000 > produce
    assert one(resource(mod, "google_pubsub_subscription", "push")["ack_deadline_seconds"]) == "${var.ack_deadline_seconds}"


def test_probes_and_startup_boost(mod):
    c = container(mod)
    assert one(one(one(c["startup_probe"])["http_get"])["path"]) == "/readyz"
    assert one(one(one(c["liveness_probe"])["http_get"])["path"]) == "/healthz"
    assert one(one(c["resources"])["startup_cpu_boost"]) is True


def test_kafka_password_only_from_secret_manager(mod):
    c = container(mod)
    dynamic_envs = [d["env"] for d in c["dynamic"] if "env" in d]
    secret_env = [e for e in dynamic_envs if "KAFKA_SASL_PASSWORD" in str(e)]
    assert secret_env, "KAFKA_SASL_PASSWORD comes from a secret_key_ref"
    assert "secret_key_ref" in str(secret_env[0])
    for block in mod["variable"]:
        for name in block:
            if "password" in name:
                assert name.endswith("_secret") or name.endswith("_secret_version"), name
    accessor = resource(mod, "google_secret_manager_secret_iam_member", "runtime_reads_password")
    assert one(accessor["role"]) == "roles/secretmanager.secretAccessor"
    assert one(accessor["member"]) == "serviceAccount:${google_service_account.runtime.email}"


def test_example_uses_the_module():
    example = load(ROOT / "examples" / "cloud-run" / "main.tf")
    bridge = one(example["module"])["bridge"]
    assert one(bridge["source"]) == "../.."
    for required in ["project_id", "region", "image", "pubsub_topic", "kafka_bootstrap_servers", "kafka_topic"]:
        assert required in bridge, required

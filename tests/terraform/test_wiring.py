"""The Terraform module's and examples' wiring, read from the HCL with python-hcl2 8 (no cloud
is reachable from the tests; the provider schema is checked separately by tf_schema_check).

Asserts what must hold for a first `terraform apply` to succeed and for pushes to be accepted:
no count/for_each on values known only after apply, APIs enabled, the push token accepted
behind Cloud Run IAM, dead letters kept, the password read by the bridge (no deploy-time secret),
the startup probe budget, CMEK and Google Managed Kafka wiring, the routing rules.
"""
import pathlib
import re

import hcl2
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "terraform"
EXAMPLES = ROOT / "examples"


def normalize(node):
    """python-hcl2 8 keeps labels and string literals quoted and marks blocks; drop both."""
    if isinstance(node, dict):
        return {normalize_key(k): normalize(v) for k, v in node.items() if k != "__is_block__"}
    if isinstance(node, list):
        return [normalize(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == '"' and node[-1] == '"':
        return node[1:-1]
    return node


def normalize_key(key):
    return key[1:-1] if len(key) >= 2 and key[0] == '"' and key[-1] == '"' else key


def load_dir(path: pathlib.Path) -> dict:
    merged: dict = {}
    for tf in sorted(path.glob("*.tf")):
        with open(tf) as f:
            for key, blocks in normalize(hcl2.load(f)).items():
                merged.setdefault(key, []).extend(blocks)
    return merged


def one(value):
    """Blocks come as lists of one."""
    if isinstance(value, list):
        assert len(value) == 1, value
        return value[0]
    return value


def resource(mod: dict, rtype: str, name: str) -> dict:
    for block in mod.get("resource", []):
        if rtype in block and name in block[rtype]:
            return block[rtype][name]
    raise AssertionError(f"{rtype}.{name} missing")


def resources(mod: dict, rtype: str) -> list:
    return [body for block in mod.get("resource", []) if rtype in block for body in block[rtype].values()]


def all_resources(mod: dict):
    for block in mod.get("resource", []):
        for rtype, named in block.items():
            for name, body in named.items():
                yield rtype, name, body


def variable(mod: dict, name: str) -> dict:
    for block in mod["variable"]:
        if name in block:
            return block[name]
    raise AssertionError(f"variable {name} missing")


def local_value(mod: dict, name: str):
    for block in mod["locals"]:
        if name in block:
            return block[name]
    raise AssertionError(f"local {name} missing")


def module_call(mod: dict, name: str) -> dict:
    for block in mod["module"]:
        if name in block:
            return block[name]
    raise AssertionError(f"module {name} missing")


@pytest.fixture(scope="module")
def mod() -> dict:
    return load_dir(ROOT)


@pytest.fixture(scope="module")
def cloud_run() -> dict:
    return load_dir(EXAMPLES / "cloud-run")


@pytest.fixture(scope="module")
def managed_kafka() -> dict:
    return load_dir(EXAMPLES / "managed-kafka")


def container(mod: dict) -> dict:
    return one(one(resource(mod, "google_cloud_run_v2_service", "bridge")["template"])["containers"])


def test_the_parser_is_python_hcl2_8_not_checkovs_fork():
    doc = hcl2.loads('resource "t" "n" {\n  b {\n  }\n}\n')
    assert doc["resource"][0]['"t"']['"n"'].get("__is_block__") is True


def test_every_module_parses():
    dirs = {p.parent for p in ROOT.rglob("*.tf")}
    assert dirs == {ROOT, EXAMPLES / "cloud-run", EXAMPLES / "managed-kafka"}
    for d in dirs:
        assert load_dir(d).get("resource"), d


ROOTS = re.compile(r"(?<![\w.])(var|local|data|module|[a-z][a-z0-9]*_[a-z0-9_]+)\.(\w+)")


def plan_time_roots(mod: dict, expression: str, seen=()) -> set:
    """The roots an expression depends on, locals followed: what count/for_each may read."""
    roots = set()
    for root, name in ROOTS.findall(str(expression)):
        if root == "local" and name not in seen:
            roots |= plan_time_roots(mod, local_value(mod, name), seen + (name,))
        elif root != "local":
            roots.add(root if root in ("var", "data", "module") else f"resource {root}")
    return roots


@pytest.mark.parametrize("path", [ROOT, EXAMPLES / "cloud-run", EXAMPLES / "managed-kafka"])
def test_count_and_for_each_read_only_variables(path):
    mod = load_dir(path)
    checked = 0
    for rtype, name, body in all_resources(mod):
        for meta in ("count", "for_each"):
            if meta in body:
                checked += 1
                roots = plan_time_roots(mod, body[meta])
                assert roots <= {"var"}, f"{rtype}.{name}.{meta} reads {roots}: unknown on a first plan"
    assert checked >= 2


def test_callers_pass_plan_time_values_where_the_module_counts(cloud_run, managed_kafka):
    bridge = module_call(cloud_run, "bridge")
    assert bridge["kafka_sasl_password_secret"] == "${var.kafka_password_secret}"
    gmk = module_call(managed_kafka, "bridge")
    assert gmk["runtime_project_roles"] == ["roles/managedkafka.client"]
    assert "kms_key_name" not in bridge and "kms_key_name" not in gmk


def test_examples_enable_the_apis_they_need(cloud_run, managed_kafka):
    for example, needed in [
        (cloud_run, {"run", "pubsub", "secretmanager", "iam", "cloudresourcemanager"}),
        (managed_kafka, {"run", "pubsub", "managedkafka", "compute", "iam", "cloudresourcemanager"}),
    ]:
        services = resource(example, "google_project_service", "enabled")
        assert services["disable_on_destroy"] is False
        listed = {s.split(".")[0] for s in re.findall(r'"([a-z]+\.googleapis\.com)"', services["for_each"])}
        assert needed <= listed, needed - listed
        depends = str(module_call(example, "bridge")["depends_on"])
        assert "google_project_service.enabled" in depends


def test_push_token_audience_is_the_services_oidc_audience(mod):
    oidc = one(one(resource(mod, "google_pubsub_subscription", "push")["push_config"])["oidc_token"])
    assert oidc["audience"] == "${local.audience}"
    assert local_value(mod, "core_env")["OIDC_AUDIENCE"] == "${local.audience}"
    assert local_value(mod, "env").startswith("${merge(local.core_env")
    service = resource(mod, "google_cloud_run_v2_service", "bridge")
    assert service["custom_audiences"] == ["${local.audience}"]


def test_behind_cloud_run_iam_the_bridge_trusts_it_with_the_push_account_only(mod):
    env = local_value(mod, "core_env")
    assert env["OIDC_TRUST_CLOUD_RUN_IAM"] == "true"
    assert env["OIDC_ALLOWED_EMAILS"] == "${google_service_account.push.email}"
    oidc = one(one(resource(mod, "google_pubsub_subscription", "push")["push_config"])["oidc_token"])
    assert oidc["service_account_email"] == "${google_service_account.push.email}"
    invokers = resources(mod, "google_cloud_run_v2_service_iam_member")
    assert len(invokers) == 1
    assert invokers[0]["role"] == "roles/run.invoker"
    assert invokers[0]["member"] == "serviceAccount:${google_service_account.push.email}"
    assert not resources(mod, "google_cloud_run_v2_service_iam_binding")
    text = "".join(p.read_text() for p in ROOT.rglob("*.tf"))
    assert "allUsers" not in text and "allAuthenticatedUsers" not in text


def test_push_subscription_never_expires(mod):
    sub = resource(mod, "google_pubsub_subscription", "push")
    assert one(sub["expiration_policy"])["ttl"] == ""


def test_dead_letters_are_kept_in_a_subscription(mod):
    sub = resource(mod, "google_pubsub_subscription", "push")
    policy = one(sub["dead_letter_policy"])
    assert policy["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    kept = resource(mod, "google_pubsub_subscription", "dead_letter")
    assert kept["topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert one(kept["expiration_policy"])["ttl"] == ""
    assert kept["message_retention_duration"] == "${var.dead_letter_retention}"
    retention = variable(mod, "dead_letter_retention")["default"]
    assert 7 * 86400 <= int(retention.rstrip("s")) <= 31 * 86400
    outputs = {k: v for block in mod["output"] for k, v in block.items()}
    assert outputs["dead_letter_subscription"]["value"] == "${google_pubsub_subscription.dead_letter.id}"
    publisher = resource(mod, "google_pubsub_topic_iam_member", "pubsub_agent_publishes_dead_letters")
    assert publisher["role"] == "roles/pubsub.publisher"
    assert publisher["member"] == "${local.pubsub_agent}"
    subscriber = resource(mod, "google_pubsub_subscription_iam_member", "pubsub_agent_acks_dead_letters")
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert subscriber["subscription"] == "${google_pubsub_subscription.push.name}"
    assert 5 <= variable(mod, "max_delivery_attempts")["default"] <= 100


def test_password_is_read_by_the_bridge_not_resolved_at_deploy(mod):
    c = container(mod)
    assert "secret_key_ref" not in str(c), "a deploy-time secret fails while IAM propagates"
    assert "KAFKA_SASL_PASSWORD_SECRET" in local_value(mod, "env")
    accessor = resource(mod, "google_secret_manager_secret_iam_member", "runtime_reads_password")
    assert accessor["role"] == "roles/secretmanager.secretAccessor"
    assert accessor["member"] == "serviceAccount:${google_service_account.runtime.email}"
    depends = str(resource(mod, "google_cloud_run_v2_service", "bridge")["depends_on"])
    assert "runtime_reads_password" in depends and "runtime_project_roles" in depends
    for block in mod["variable"]:
        for name in block:
            if "password" in name:
                assert name.endswith("_secret") or name.endswith("_secret_version"), name


def test_startup_probe_budget_fits_direct_vpc_delays_and_cloud_runs_cap(mod):
    probe = one(container(mod)["startup_probe"])
    assert one(probe["http_get"])["path"] == "/readyz"
    period = local_value(mod, "startup_probe_period")
    assert probe["period_seconds"] == "${local.startup_probe_period}"
    assert probe["failure_threshold"] == "${ceil(local.startup_probe_budget / local.startup_probe_period)}"
    assert local_value(mod, "startup_probe_budget") == "${coalesce(var.startup_probe_budget_seconds, 240)}"
    # Google: "connection establishment delays of a minute or more" with Direct VPC egress.
    assert 60 < 240 and (240 // period) * period <= 240
    assert "<= 240" in variable(mod, "startup_probe_budget_seconds")["validation"][0]["condition"]


def test_liveness_probe_restarts_only_a_kafka_client_stuck_beyond_its_own_repair(mod):
    probe = one(container(mod)["liveness_probe"])
    assert one(probe["http_get"])["path"] == "/healthz"
    assert probe["period_seconds"] == "${local.liveness_probe_period}"
    assert probe["failure_threshold"] == "${local.liveness_probe_failures}"
    period = local_value(mod, "liveness_probe_period")
    failures = local_value(mod, "liveness_probe_failures")
    # /healthz fails after 6 request timeouts (5 s by default) without Kafka progress; the
    # probe adds at least as long again before a restart, so a self-repair is never cut short.
    assert period * failures >= 6 * 5


def test_cmek_grants_the_pubsub_agent_the_key_role(mod):
    grant = resource(mod, "google_kms_crypto_key_iam_member", "pubsub_agent_uses_key")
    assert grant["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    assert grant["member"] == "${local.pubsub_agent}"
    assert grant["crypto_key_id"] == "${var.kms_key_name}"
    topic = resource(mod, "google_pubsub_topic", "dead_letter")
    assert "google_kms_crypto_key_iam_member.pubsub_agent_uses_key" in str(topic["depends_on"])


def test_scales_to_zero_by_default(mod):
    assert variable(mod, "min_instances")["default"] == 0
    scaling = one(one(resource(mod, "google_cloud_run_v2_service", "bridge")["template"])["scaling"])
    assert scaling["min_instance_count"] == "${var.min_instances}"


def test_ack_deadline_exceeds_the_produce_timeout(mod):
    ack = variable(mod, "ack_deadline_seconds")["default"]
    produce = variable(mod, "kafka_produce_timeout_ms")["default"]
    request = variable(mod, "request_timeout_seconds")["default"]
    assert ack * 1000 > produce and request * 1000 > produce


def test_managed_kafka_example_is_the_whole_google_native_pipeline(managed_kafka):
    bridge = module_call(managed_kafka, "bridge")
    assert bridge["source"] == "../.."
    assert bridge["kafka_security_protocol"] == "SASL_SSL"
    assert bridge["kafka_sasl_mechanism"] == "OAUTHBEARER"
    assert "kafka_sasl_password_secret" not in bridge
    assert bridge["vpc_network"] == "${var.network}"
    assert bridge["vpc_subnetwork"] == "${var.subnetwork}"
    assert bridge["kafka_bootstrap_servers"] == "${local.bootstrap}"
    assert local_value(managed_kafka, "bootstrap") == (
        "bootstrap.${local.cluster_id}.${var.region}.managedkafka.${var.project_id}.cloud.goog:9092"
    )
    cluster = resource(managed_kafka, "google_managed_kafka_cluster", "cluster")
    subnet = one(one(one(cluster["gcp_config"])["access_config"])["network_configs"])["subnet"]
    assert subnet == "projects/${var.project_id}/regions/${var.region}/subnetworks/${var.subnetwork}"
    topic = resource(managed_kafka, "google_managed_kafka_topic", "events")
    assert topic["topic_id"] == "${var.kafka_topic}" and topic["cluster"] == "${local.cluster_id}"
    assert "google_managed_kafka_topic.events" in str(bridge["depends_on"])


def test_cloud_run_example_takes_or_creates_the_password_secret(cloud_run):
    assert variable(cloud_run, "kafka_password")["sensitive"] is True
    version = resource(cloud_run, "google_secret_manager_secret_version", "kafka_password")
    assert version["count"] == "${var.create_kafka_password_secret ? 1 : 0}"
    assert variable(cloud_run, "create_kafka_password_secret")["default"] is False


def test_inflight_budget_follows_the_instance_memory(mod):
    # The arithmetic itself was checked with `terraform console`: 256Mi -> 54525952, 1Gi -> 255852544.
    assert local_value(mod, "core_env")["MAX_INFLIGHT_BYTES"] == "${tostring(local.inflight_bytes)}"
    assert "local.memory_mib - 48" in local_value(mod, "inflight_bytes")
    assert variable(mod, "memory")["default"] == "256Mi"
    assert variable(mod, "memory").get("validation"), "memory must be validated so the budget can be computed"


# --- routing rules ---


def test_routes_are_jsonencoded_into_ROUTES_only_when_given(mod):
    routes = variable(mod, "routes")
    assert routes["default"] == []
    fields = re.findall(r"(\w+) = optional\((\w+(?:\(\w+\))?)\)", routes["type"])
    assert dict(fields) == {
        "when": "string", "topic": "string", "drop": "bool", "key": "string",
        "headers": "map(string)", "timestamp": "string",
    }
    # Unset fields are left out of the JSON; a null header value stays (it removes the header).
    assert local_value(mod, "routes") == (
        "${[for rule in var.routes : {for field, value in rule : field => value if value != null}]}"
    )
    env = local_value(mod, "env")
    assert "length(var.routes) == 0 ? {} : {ROUTES = jsonencode(local.routes)}" in env
    assert "ROUTES" not in local_value(mod, "core_env")


def test_routes_are_validated_where_terraform_can(mod):
    conditions = [v["condition"] for v in variable(mod, "routes")["validation"]]
    assert "(r.topic != null) != (r.drop == true) && r.drop != false" in conditions[0]
    assert any("[a-zA-Z0-9._-]{1,249}" in c for c in conditions), "Kafka's topic name rule"
    assert any("[r.when, r.key, r.timestamp]" in c for c in conditions), "no empty expression"
    assert any("keys(r.headers" in c for c in conditions), "no empty header name"


def test_routes_refuse_the_other_routing_settings_and_need_a_topic_somewhere(mod):
    assert local_value(mod, "routing_env_vars") == ["ROUTES", "ROUTES_FILE", "KAFKA_TOPIC_BY_SUBSCRIPTION"]
    service = resource(mod, "google_cloud_run_v2_service", "bridge")
    conditions = [p["condition"] for p in one(service["lifecycle"])["precondition"]]
    assert (
        "${length(var.routes) == 0 || length(setintersection(keys(var.extra_env), local.routing_env_vars)) == 0}"
        in conditions
    )
    # KAFKA_TOPIC is the fallback of the rules: set unless kafka_topic is "", which needs rules.
    assert "var.kafka_topic == \"\" ? {} : {KAFKA_TOPIC = var.kafka_topic}" in local_value(mod, "env")
    assert "KAFKA_TOPIC" not in local_value(mod, "core_env")
    assert any(c.startswith('${var.kafka_topic != "" || length(var.routes) > 0') for c in conditions)


def test_cloud_run_example_routes_two_event_types_to_two_topics_and_drops_test_events(cloud_run):
    assert module_call(cloud_run, "bridge")["routes"] == "${var.routes}"
    rules = variable(cloud_run, "routes")["default"]
    assert [r.get("topic") for r in rules if "topic" in r] == ["orders", "refunds"]
    drops = [r for r in rules if r.get("drop") is True]
    assert len(drops) == 1 and "test" in drops[0]["when"]
    assert rules.index(drops[0]) == 0, "test events are dropped whatever their type"
    for rule in rules:
        # Reading an absent attribute fails the rule (route_failed): every read is guarded.
        for name in re.findall(r"(?<!has\()attributes\.(\w+)", rule["when"]):
            assert f"has(attributes.{name})" in rule["when"], rule


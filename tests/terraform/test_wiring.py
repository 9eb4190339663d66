"""The Terraform module's and examples' wiring, read from the HCL with python-hcl2 8 (no cloud
is reachable from the tests; the provider schema is checked separately by tf_schema_check).

Asserts what must hold for a first `terraform apply` to succeed and for pushes to be accepted:
no count/for_each on values known only after apply, APIs enabled, the push token accepted
behind Cloud Run IAM, dead letters kept, the password read by the bridge (no deploy-time secret),
the startup probe budget, CMEK and Google Managed Kafka wiring, the routing rules, and the
monitoring (every metric on an allow-list taken from Google's metric list).
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
        (cloud_run, {"run", "pubsub", "secretmanager", "iam", "cloudresourcemanager", "monitoring"}),
        (managed_kafka, {"run", "pubsub", "managedkafka", "compute", "iam", "cloudresourcemanager", "monitoring"}),
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


def test_pubsub_schema_revisions_are_readable_by_the_runtime_account(mod):
    grant = resource(mod, "google_pubsub_schema_iam_member", "runtime_reads_schemas")
    assert grant["role"] == "roles/pubsub.viewer"
    assert grant["member"] == "serviceAccount:${google_service_account.runtime.email}"
    assert 'var.kafka_value_format == "pubsub-schema"' in grant["for_each"]
    assert "var.pubsub_schemas" in grant["for_each"]
    assert grant["schema"] == '${split("/", each.value)[3]}'
    assert grant["project"] == '${split("/", each.value)[1]}'


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


# --- monitoring ---

# The metric types the module may use, from Google's metric list
# (https://cloud.google.com/monitoring/api/metrics_gcp_p_z, sections "pubsub" and "run"): the
# monitored resource each is written against, its kind and value type, and its metric labels.
ALLOWED_METRICS = {
    "pubsub.googleapis.com/subscription/push_request_count": (
        "pubsub_subscription", "DELTA INT64", {"response_class", "response_code", "delivery_type"}),
    "pubsub.googleapis.com/subscription/push_request_latencies": (
        "pubsub_subscription", "DELTA DISTRIBUTION", {"response_code", "delivery_type"}),
    "pubsub.googleapis.com/subscription/oldest_unacked_message_age": ("pubsub_subscription", "GAUGE INT64", set()),
    "pubsub.googleapis.com/subscription/num_undelivered_messages": ("pubsub_subscription", "GAUGE INT64", set()),
    "run.googleapis.com/request_count": (
        "cloud_run_revision", "DELTA INT64", {"response_code", "response_code_class", "route_type"}),
    "run.googleapis.com/request_latencies": (
        "cloud_run_revision", "DELTA DISTRIBUTION", {"response_code", "response_code_class", "route_type"}),
    "run.googleapis.com/container/instance_count": ("cloud_run_revision", "GAUGE INT64", {"state"}),
    "run.googleapis.com/container/cpu/utilizations": ("cloud_run_revision", "DELTA DISTRIBUTION", set()),
    "run.googleapis.com/container/memory/utilizations": ("cloud_run_revision", "DELTA DISTRIBUTION", set()),
}
# The monitored resources' labels (same list, "Monitored resource types").
RESOURCE_LABELS = {
    "pubsub_subscription": {"project_id", "subscription_id"},
    "cloud_run_revision": {"project_id", "service_name", "revision_name", "location", "configuration_name"},
}
# Aligners that make sense for each kind: a gauge is not a rate, a distribution has percentiles.
ALIGNERS = {
    "GAUGE INT64": {"ALIGN_MAX", "ALIGN_MEAN", "ALIGN_MIN"},
    "DELTA INT64": {"ALIGN_RATE", "ALIGN_SUM", "ALIGN_DELTA"},
    "DELTA DISTRIBUTION": {"ALIGN_DELTA", "ALIGN_PERCENTILE_50", "ALIGN_PERCENTILE_95", "ALIGN_PERCENTILE_99"},
}
MONITORING_RESOURCES = ("google_monitoring_dashboard", "google_monitoring_alert_policy")


def monitoring_filters(mod: dict) -> dict:
    """The filters with their ${local.*} scopes expanded and HCL's escapes undone."""
    def expand(text: str) -> str:
        return re.sub(r"\$\{local\.(\w+)\}", lambda m: expand(local_value(mod, m.group(1))), text)
    return {name: expand(f).replace('\\"', '"') for name, f in local_value(mod, "monitoring_filters").items()}


def parse_filter(text: str):
    """(metric type, resource type, {metric labels}, {resource labels}) of a Monitoring filter."""
    clauses = dict.fromkeys(("metric.type", "resource.type"))
    metric_labels, resource_labels = set(), set()
    for clause in text.split(" AND "):
        m = re.fullmatch(r'(metric\.type|resource\.type|metric\.label\.(\w+)|resource\.label\.(\w+)) (=|!=) "([^"]*)"', clause.strip())
        assert m, f"unexpected clause {clause!r} in {text!r}"
        key, metric_label, resource_label, _op, value = m.groups()
        if metric_label:
            metric_labels.add(metric_label)
        elif resource_label:
            resource_labels.add(resource_label)
        else:
            assert clauses[key] is None, f"{key} twice in {text!r}"
            clauses[key] = value
    return clauses["metric.type"], clauses["resource.type"], metric_labels, resource_labels


def test_every_filter_uses_a_metric_from_googles_list_with_its_resource_and_labels(mod):
    filters = monitoring_filters(mod)
    used = set()
    for name, text in filters.items():
        metric, resource_type, metric_labels, resource_labels = parse_filter(text)
        assert metric in ALLOWED_METRICS, f"{name}: {metric} is not on the allow-list"
        allowed_resource, _kind, allowed_labels = ALLOWED_METRICS[metric]
        assert resource_type == allowed_resource, (name, resource_type)
        assert metric_labels <= allowed_labels, (name, metric_labels)
        assert resource_labels <= RESOURCE_LABELS[resource_type], (name, resource_labels)
        used.add(metric)
    assert used == set(ALLOWED_METRICS), "an allowed metric nothing uses: drop it from the list"
    # No filter written anywhere else: every metric.type in the module is one of these.
    text = "".join(p.read_text() for p in ROOT.glob("*.tf"))
    for metric in re.findall(r'metric\.type = \\"([^"\\]+)\\"', text):
        assert metric in ALLOWED_METRICS, metric
    for rtype, _name, body in all_resources(mod):
        if rtype == "google_monitoring_alert_policy":
            threshold = one(one(body["conditions"])["condition_threshold"])
            for key in ("filter", "denominator_filter"):
                if key in threshold:
                    assert re.fullmatch(r"\$\{local\.monitoring_filters\.(\w+)\}", threshold[key]), threshold[key]


def dashboard_text(mod: dict) -> str:
    return resource(mod, "google_monitoring_dashboard", "bridge")["dashboard_json"]


def test_dashboard_aligns_and_groups_each_metric_as_its_kind_allows(mod):
    filters = monitoring_filters(mod)
    text = dashboard_text(mod)
    queries = re.findall(
        r'filter = local\.monitoring_filters\.(\w+), aggregation = \{alignmentPeriod = [^,]+, '
        r'perSeriesAligner = "(\w+)", crossSeriesReducer = "?([\w${}]+)"?(?:, groupByFields = \[([^\]]*)\])?',
        text,
    )
    assert len(queries) == text.count("timeSeriesFilter"), "every chart query parsed"
    for name, aligner, _reducer, group_by in queries:
        metric, _resource, _labels, _resource_labels = parse_filter(filters[name])
        _resource_type, kind, labels = ALLOWED_METRICS[metric]
        assert aligner in ALIGNERS[kind], (name, aligner)
        for field in re.findall(r'"metric\.label\.(\w+)"', group_by):
            assert field in labels, (name, field)


def test_dashboard_shows_every_tile_the_runbook_describes(mod):
    text = dashboard_text(mod)
    charted = set(re.findall(r"local\.monitoring_filters\.(\w+)", text))
    assert charted == set(local_value(mod, "monitoring_filters")) - {"push_errors"}
    assert 'groupByFields = ["metric.label.response_class"]' in text, "push requests by response class"
    runbook = (ROOT.parent / "docs" / "operations.md").read_text()
    titles = re.findall(r'title = "([^"]+)"', text)
    assert len(titles) >= 11
    for title in titles:
        assert f"**{title}**" in runbook, f"docs/operations.md does not describe the tile {title!r}"


def test_monitoring_is_on_by_default_and_off_removes_every_monitoring_resource(mod, cloud_run, managed_kafka):
    assert variable(mod, "monitoring")["default"] is True
    found = [(rtype, name) for rtype, name, _ in all_resources(mod) if rtype.startswith("google_monitoring_")]
    assert sorted(found) == sorted([
        ("google_monitoring_dashboard", "bridge"),
        ("google_monitoring_alert_policy", "oldest_unacked_message_age"),
        ("google_monitoring_alert_policy", "dead_letters"),
        ("google_monitoring_alert_policy", "push_error_ratio"),
    ])
    for rtype, name in found:
        assert resource(mod, rtype, name)["count"] == "${var.monitoring ? 1 : 0}", (rtype, name)
    outputs = {k: v for block in mod["output"] for k, v in block.items()}
    assert outputs["monitoring_dashboard"]["value"].startswith("${var.monitoring ?")
    for example in (cloud_run, managed_kafka):
        assert variable(example, "monitoring")["default"] is True
        bridge = module_call(example, "bridge")
        assert bridge["monitoring"] == "${var.monitoring}"
        assert bridge["notification_channels"] == "${var.notification_channels}"


def alert(mod: dict, name: str):
    policy = resource(mod, "google_monitoring_alert_policy", name)
    return policy, one(one(policy["conditions"])["condition_threshold"])


def test_alerts_use_their_thresholds_and_notify_the_channels_passed_in(mod):
    channels = variable(mod, "notification_channels")
    assert channels["default"] == [] and "notificationChannels" in channels["validation"][0]["condition"]
    for name in ("oldest_unacked_message_age", "dead_letters", "push_error_ratio"):
        policy, threshold = alert(mod, name)
        assert policy["notification_channels"] == "${var.notification_channels}", name
        assert threshold["comparison"] == "COMPARISON_GT", name
        assert policy["combiner"] == "OR" and policy["project"] == "${var.project_id}"
        assert "docs/operations.md" in one(policy["documentation"])["content"], name

    _, oldest = alert(mod, "oldest_unacked_message_age")
    assert oldest["filter"] == "${local.monitoring_filters.oldest_unacked_age}"
    assert oldest["threshold_value"] == "${var.alert_oldest_unacked_age_seconds}"
    assert oldest["duration"] == "${var.alert_oldest_unacked_duration_seconds}s"
    # Alerts before a message failing with the default backoff reaches its dead-letter policy.
    assert 60 <= variable(mod, "alert_oldest_unacked_age_seconds")["default"] <= 1800

    _, dead = alert(mod, "dead_letters")
    assert dead["filter"] == "${local.monitoring_filters.dead_letters}"
    assert dead["threshold_value"] == 0, "any dead letter"
    assert "google_pubsub_subscription.dead_letter.name" in local_value(mod, "dead_letter")

    _, ratio = alert(mod, "push_error_ratio")
    assert ratio["filter"] == "${local.monitoring_filters.push_errors}"
    assert ratio["denominator_filter"] == "${local.monitoring_filters.push_requests}"
    assert ratio["threshold_value"] == "${var.alert_push_error_ratio}"
    # A ratio needs both sides aligned and grouped alike.
    assert ratio["aggregations"] == ratio["denominator_aggregations"]
    assert 0 < variable(mod, "alert_push_error_ratio")["default"] <= 0.1
    errors = monitoring_filters(mod)["push_errors"]
    assert 'metric.label.response_class != "ack"' in errors


def test_runbook_has_the_section_every_alert_names(mod):
    runbook = (ROOT.parent / "docs" / "operations.md").read_text()
    headings = set(re.findall(r"^#+ (.+)$", runbook, flags=re.M))
    for name in ("oldest_unacked_message_age", "dead_letters", "push_error_ratio"):
        policy, _ = alert(mod, name)
        section = re.search(r'docs/operations\.md, \\"([^"\\]+)\\"', one(policy["documentation"])["content"])
        assert section and section.group(1) in headings, (name, section)

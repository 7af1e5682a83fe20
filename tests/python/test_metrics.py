"""Both services' /metrics parse as OpenMetrics with the official Prometheus Python parser, and
move by exactly one request's worth after one request."""

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families


def scrape(url):
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def sample(families, family, name, **labels):
    matches = [s.value for s in families[family].samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(matches)


def test_both_endpoints_parse_and_count_one_request(stack):
    gateway_url, scheduler_url = f"{stack.gateway_url}/metrics", stack.scheduler_metrics_url
    before_gw, before_sched = scrape(gateway_url), scrape(scheduler_url)
    response = httpx.post(f"{stack.gateway_url}/v1/chat/completions", timeout=30, headers={"x-tenant-id": "metrics"},
                          json={"model": "llama3.2", "max_tokens": 3,
                                "messages": [{"role": "user", "content": "one two"}]})
    assert response.status_code == 200
    after_gw, after_sched = scrape(gateway_url), scrape(scheduler_url)

    def moved(before, after, family, name, **labels):
        return sample(after, family, name, **labels) - (sample(before, family, name, **labels) if family in before else 0)

    assert moved(before_gw, after_gw, "llmgw_http_requests", "llmgw_http_requests_total",
                 model="llama3.2", status="200") == 1
    assert moved(before_gw, after_gw, "llmgw_tokens", "llmgw_tokens_total",
                 tenant="metrics", token_type="output") == 3
    assert moved(before_gw, after_gw, "llmgw_tokens", "llmgw_tokens_total",
                 tenant="metrics", token_type="input") == 2
    assert moved(before_gw, after_gw, "gen_ai_server_request_duration_seconds",
                 "gen_ai_server_request_duration_seconds_count", model="llama3.2") == 1
    assert moved(before_sched, after_sched, "llmgw_admission", "llmgw_admission_total",
                 pool="default", outcome="admitted") == 1
    assert moved(before_sched, after_sched, "gen_ai_server_time_to_first_token_seconds",
                 "gen_ai_server_time_to_first_token_seconds_count", pool="default") == 1
    assert sample(after_sched, "llmgw_pool_slots", "llmgw_pool_slots", pool="default") == 4
    assert sample(after_sched, "llmgw_in_flight", "llmgw_in_flight", pool="default") == 0


def test_the_grafana_dashboard_only_uses_metrics_the_services_export(stack):
    import json
    import re

    from conftest import ROOT

    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/llm-gateway.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 10
    # Families appear with their first sample: make one of each kind happen first.
    chat = {"model": "llama3.2", "max_tokens": 2, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(f"{stack.gateway_url}/v1/chat/completions", json=chat, timeout=30).status_code == 200
    httpx.put(f"{stack.sim_url}/sim/fault", content="status:500").raise_for_status()
    try:
        assert httpx.post(f"{stack.gateway_url}/v1/chat/completions", json=chat, timeout=30).status_code == 502
    finally:
        httpx.put(f"{stack.sim_url}/sim/fault", content="none").raise_for_status()
    exported = set()
    for url in (f"{stack.gateway_url}/metrics", stack.scheduler_metrics_url):
        text = httpx.get(url, timeout=10).text
        # Declared families count even before their first sample.
        exported.update(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
        for family in text_string_to_metric_families(text):
            exported.update(sample.name for sample in family.samples)
    used = {name for expr in exprs for name in re.findall(r"\b((?:llmgw|gen_ai)_[a-z_]+)\b", expr)}
    def family_of(name):
        return re.sub(r"_(total|bucket|count|sum)$", "", name)

    missing = {name for name in used if name not in exported and family_of(name) not in exported}
    assert not missing, f"dashboard queries metrics nobody exports: {missing}"

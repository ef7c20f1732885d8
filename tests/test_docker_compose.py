"""docker-compose.yml: no engine runs here, so the file itself is checked."""

import shlex
from pathlib import Path

import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


WORKERS = ("worker", "send-worker", "preview-worker")


def test_it_has_the_services_each_with_a_healthcheck_where_it_serves():
    assert {"web", "tracker", *WORKERS, "beat", "postgres", "redis"} <= set(SERVICES)
    for name in ("web", "tracker", *WORKERS, "postgres", "redis"):
        assert "test" in SERVICES[name]["healthcheck"], name


def consumed_queues(command: str) -> set[str]:
    """The queues a `celery … worker` command consumes (-Q/--queues)."""
    words = shlex.split(command)
    for flag, value in zip(words, words[1:], strict=False):
        if flag in ("-Q", "--queues"):
            return set(value.split(","))
    return {settings.CELERY_TASK_DEFAULT_QUEUE}


def test_every_queue_has_one_worker_and_no_send_shares_the_pipelines():
    workers = {
        name: consumed_queues(service["command"])
        for name, service in SERVICES.items()
        if "celery -A clickmap worker" in service.get("command", "")
    }
    assert set(workers) == set(WORKERS)
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    for queue in routed | {settings.CELERY_TASK_DEFAULT_QUEUE}:
        assert sum(queue in queues for queues in workers.values()) == 1, queue
    send_queue = settings.CELERY_TASK_ROUTES["campaigns.send_campaign"]["queue"]
    assert workers["send-worker"] == {send_queue}  # a send worker does nothing else
    # What beat schedules (ingestion, aggregation) runs on the spool-sharing worker.
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert settings.CELERY_TASK_ROUTES[entry["task"]]["queue"] in workers["worker"]
    assert settings.CELERY_TASK_ROUTES["clickmap.render_preview"]["queue"] not in (
        workers["worker"] | workers["send-worker"]
    )


def test_tracker_serves_the_same_app_and_shares_the_spool_with_the_ingesting_worker():
    tracker = SERVICES["tracker"]
    assert "gunicorn clickmap.wsgi:application" in tracker["command"]
    assert "8001:8001" in tracker["ports"]
    spool = tracker["environment"]["TRACKING_SPOOL_DIR"]
    for name in ("tracker", "web", "worker"):
        assert f"spool-data:{spool}" in SERVICES[name]["volumes"], name


def test_app_services_build_the_dockerfile_and_wait_for_healthy_stores():
    assert (ROOT / "Dockerfile").is_file()
    for name in ("web", "tracker", *WORKERS, "beat"):
        service = SERVICES[name]
        assert service["build"] == "."
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_commands_run_gunicorn_celery_worker_and_beat():
    assert "gunicorn clickmap.wsgi:application" in SERVICES["web"]["command"]
    assert "migrate" in SERVICES["web"]["command"]
    for name in WORKERS:
        assert SERVICES[name]["command"].startswith("celery -A clickmap worker"), name
    assert SERVICES["beat"]["command"].startswith("celery -A clickmap beat")
    assert "8000:8000" in SERVICES["web"]["ports"]


def test_app_environment_points_at_the_compose_postgres_and_redis():
    db = SERVICES["postgres"]["environment"]
    for name in ("web", *WORKERS, "beat"):
        env = SERVICES[name]["environment"]
        assert env["DATABASE_URL"] == (
            f"postgres://{db['POSTGRES_USER']}:{db['POSTGRES_PASSWORD']}@postgres:5432/"
            f"{db['POSTGRES_DB']}"
        )
        assert env["REDIS_URL"].startswith("redis://redis:6379/")
        assert "SECRET_KEY" in env and "TRACKING_BASE_URL" in env


def test_data_lives_in_named_volumes():
    volumes = set(COMPOSE["volumes"])
    assert any(v.endswith(":/var/lib/postgresql") for v in SERVICES["postgres"]["volumes"])
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in volumes


def test_dockerfile_uses_debian_chromium_and_never_downloads_a_browser():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "apt-get install" in dockerfile and "chromium" in dockerfile
    assert "playwright install" not in dockerfile
    assert "FROM python:3.11" in dockerfile


def test_tracking_links_default_to_the_tracker_service():
    tracker_port = SERVICES["tracker"]["ports"][0].split(":")[-1]
    assert tracker_port == "8001"
    for name in ("web", "tracker", *WORKERS, "beat"):
        value = SERVICES[name]["environment"]["TRACKING_BASE_URL"]
        # ${TRACKING_BASE_URL:-default}: the default is what an unconfigured install uses.
        assert value == "${TRACKING_BASE_URL:-http://localhost:8001}", name


def gunicorn_argv(service: str) -> list[str]:
    """The gunicorn command line a service runs (after `migrate &&` for the web)."""
    words = shlex.split(SERVICES[service]["command"])
    if words[:2] == ["sh", "-c"]:
        words = shlex.split(words[2].split("&&")[-1])
    assert words[0] == "gunicorn", service
    return words


def control_socket(argv: list[str]) -> str | None:
    """The control socket a gunicorn command line asks for; None when it disables it."""
    if "--no-control-socket" in argv:
        return None
    assert "--control-socket" in argv, f"gunicorn's shared default socket: {argv}"
    return argv[argv.index("--control-socket") + 1]


def test_each_gunicorn_has_its_own_control_socket():
    sockets = [control_socket(gunicorn_argv(name)) for name in ("web", "tracker")]
    named = [s for s in sockets if s is not None]
    assert len(set(named)) == len(named)


def test_each_gunicorn_logs_in_the_house_format_with_an_access_log():
    """gunicorn's own lines and one access record per request, as tests/test_logs.py
    shows them written by this logger class."""
    for name in ("web", "tracker"):
        argv = gunicorn_argv(name)
        assert argv[argv.index("--logger-class") + 1] == "clickmap.gunicorn_logging.Logger"
        assert argv[argv.index("--access-logfile") + 1] == "-", name


def test_two_gunicorns_on_one_host_each_answer_on_their_own_control_socket(tmp_path):
    """Both services' gunicorn command lines, run side by side on this host with one
    HOME (ports and socket directory moved to the test's): each socket reaches its own
    master, and a reload through it reloads that master only."""
    import json
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import free_port

    bin_dir = Path(sys.executable).parent
    env = os.environ | {
        "HOME": str(tmp_path / "home"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "PYTHONWARNINGS": "ignore:No directory at",
    }
    masters = {}
    try:
        for name in ("web", "tracker"):
            argv = gunicorn_argv(name)
            argv[argv.index("--bind") + 1] = f"127.0.0.1:{free_port()}"
            argv[argv.index("--workers") + 1] = "1"
            socket_path = control_socket(argv)
            if socket_path is None:
                continue
            moved = str(tmp_path / Path(socket_path).name)
            argv[argv.index("--control-socket") + 1] = moved
            log = (tmp_path / f"{name}.log").open("wb")
            process = subprocess.Popen(
                [str(bin_dir / "gunicorn"), *argv[1:]],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            masters[name] = (process, moved)
            deadline = time.monotonic() + 60
            while not Path(moved).exists():
                assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
                assert time.monotonic() < deadline, f"{name}: no control socket"
                time.sleep(0.1)

        def ask(path: str, command: str) -> dict:
            result = subprocess.run(
                [str(bin_dir / "gunicornc"), "-s", path, "-c", command, "-j"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            return json.loads(result.stdout)

        for name, (process, path) in masters.items():
            assert ask(path, "show stats")["pid"] == process.pid, name
        web_process, web_socket = masters["web"]
        ask(web_socket, "reload")
        deadline = time.monotonic() + 30
        while ask(web_socket, "show stats")["reloads"] != 1:
            assert time.monotonic() < deadline, "the web did not reload"
            time.sleep(0.1)
        if "tracker" in masters:
            assert ask(masters["tracker"][1], "show stats")["reloads"] == 0
    finally:
        for process, _ in masters.values():
            process.terminate()
            process.wait(30)


def test_the_trackers_health_check_is_the_trackers_and_the_webs_the_webs():
    assert SERVICES["tracker"]["environment"]["SERVICE_ROLE"] == "tracker"
    assert "SERVICE_ROLE" not in SERVICES["web"]["environment"]  # the default: web
    assert settings.SERVICE_ROLE == "web"
    for name, port in (("web", 8000), ("tracker", 8001)):
        probe = " ".join(SERVICES[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz'" in probe, name


def test_every_counting_process_shares_one_metrics_directory():
    """/metrics (served by the web) adds up the files of every process that counts:
    the gunicorns and the workers must write to one volume."""
    directory = SERVICES["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    for name in ("web", "tracker", *WORKERS):
        assert SERVICES[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == directory, name
        assert f"metrics-data:{directory}" in SERVICES[name]["volumes"], name
    assert "METRICS_TOKEN" in SERVICES["web"]["environment"]
    # The image creates the volumes' folders for its user (else they start root-owned).
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"mkdir -p /app/var/spool {directory}" in dockerfile

"""The OpenAPI schema agrees with the API, and no input makes it answer 500 (issue 13).

schemathesis reads ``/api/schema/`` from a live server holding a seeded demo clinic and, for every operation,
sends the schema's examples, property-based fuzzed inputs (valid and invalid: wrong types, missing fields,
out-of-range numbers, unknown enum values ...) and stateful sequences (create, then read/act on what was
created), as two roles (an oncologist and a scheduler, logged in through the login page). Each response must:

- not be a server error (``not_a_server_error``),
- have a status code the schema documents for the operation (``status_code_conformance``),
- have a documented Content-Type (``content_type_conformance``),
- match the documented body schema (``response_schema_conformance``).

The run is deterministic (fixed seed, ``--generation-deterministic``) and bounded (``MAX_EXAMPLES`` fuzzed cases
per operation; coverage cases are what the schema defines), a few minutes on 2 cores.
"""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .live_clinic import ROOT, copy_clinic, live_clinic, seed_clinic, session_headers

pytestmark = pytest.mark.schemathesis

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# The coverage phase (every boundary and invalid value the schema implies, about 18,900 requests per role) takes
# about 5 minutes on the idle 2-core machine: .ci/run sets RADPATH_SCHEMATHESIS_PHASES=examples,coverage,fuzzing,
# stateful; a local `make test` runs the other three.
PHASES = os.environ.get("RADPATH_SCHEMATHESIS_PHASES", "examples,fuzzing,stateful")
MAX_EXAMPLES = int(os.environ.get("RADPATH_SCHEMATHESIS_EXAMPLES", "3"))
WORKERS = os.environ.get("RADPATH_SCHEMATHESIS_WORKERS", "1")  # concurrent requests (the live server is threaded)
ROLES = ("oncologist", "scheduler")
CONFIG = Path(__file__).with_name("schemathesis.toml")


def schemathesis_command(base, headers, report):
    st = Path(sys.executable).with_name("st")
    command = [str(st), "--config-file", str(CONFIG), "--no-color", "run", f"{base}/api/schema/?format=json",
               "--checks", CHECKS, "--phases", PHASES, "--max-examples", str(MAX_EXAMPLES), "--seed", "13",
               "--generation-deterministic", "--workers", WORKERS, "--request-timeout", "120",
               "--report", "junit", "--report-junit-path", str(report)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    return command


@pytest.fixture(scope="module")
def contract_runs(tmp_path_factory):
    """Both roles' runs at once, each against a live clinic of its own (its own database, so neither run's
    stateful phase changes what the other sees): the wall time of one run, whichever worker holds this module."""
    timeout = int(os.environ.get("RADPATH_SCHEMATHESIS_TIMEOUT", "900"))
    seeded = tmp_path_factory.mktemp("contract-seed")
    seed_clinic(seeded)  # migrated and seeded once; each role's server runs on a copy
    with contextlib.ExitStack() as stack:
        runs = {}
        for role in ROLES:
            folder = tmp_path_factory.mktemp(f"contract-{role}")
            copy_clinic(seeded, folder)
            base = stack.enter_context(live_clinic(folder, seeded=True))
            out, err = stack.enter_context(open(folder / "st.out", "w+")), stack.enter_context(open(folder / "st.err", "w+"))
            command = schemathesis_command(base, session_headers(base, role), folder / "junit.xml")
            runs[role] = (subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, text=True), out, err)
        results = {}
        for role, (proc, out, err) in runs.items():
            note = ""
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                note = f"\nschemathesis as {role} did not finish within {timeout} s"
            out.seek(0), err.seek(0)
            results[role] = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read() + note)
        yield results


@pytest.mark.parametrize("role", ROLES)
def test_schema_and_responses_agree(contract_runs, role):
    result = contract_runs[role]
    summary = result.stdout[result.stdout.find("=== SUMMARY") :] if "=== SUMMARY" in result.stdout else result.stdout[-4000:]
    assert result.returncode == 0, f"schemathesis as {role} found failures:\n{result.stdout[-20000:]}\n{result.stderr[-2000:]}"
    # A run that tested nothing would also exit 0: every operation of the schema must have been exercised.
    assert "Tested: 0" not in summary and "Tested:" in summary, summary

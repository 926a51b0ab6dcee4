"""A company on 1C alone: counterparties are the clients, tasks go back into 1C."""

from tests.e2e.conftest import ANCHOR, ROOT

CFG = ROOT / "config" / "onec-only.yaml"


def test_onec_only_config_finds_debtor_and_lost_and_writes_tasks_to_1c_once(sandbox):
    onec = next(s for s in sandbox.sb._services if hasattr(s, "odata") and hasattr(s, "ib"))
    task_set = next(name for name in onec.ib.sets if name.startswith(("Task_", "Document_Событие")))
    before = len(onec.ib.sets[task_set].all_rows())
    company = sandbox.sb.company
    r = sandbox.cli("plan", str(CFG), "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert company.company(company.stories["debtor"]).title in r.stdout
    assert company.company(company.stories["lost_from_1c"]).title in r.stdout
    assert len(onec.ib.sets[task_set].all_rows()) == before
    for _ in range(2):
        r = sandbox.cli("run", str(CFG), "--once", "--now", ANCHOR)
        assert r.returncode == 0, r.stdout + r.stderr
    rows = onec.ib.sets[task_set].all_rows()
    ours = [row for row in rows if "[cn-" in str(row)]
    assert len(rows) - before == len(ours) >= 2

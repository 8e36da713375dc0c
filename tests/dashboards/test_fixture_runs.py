from twin.run_folder import RunFolder, list_runs


def test_fixture_runs_are_real_and_differ(runs_root, run_a, run_b) -> None:
    infos = {i.name: i for i in list_runs(runs_root)}
    assert set(infos) == {"morning_a", "morning_b"}
    assert all(i.state == "finished" for i in infos.values())
    a, b = RunFolder(run_a), RunFolder(run_b)
    assert len(a.traces(quantities=["import_kw"])) == 360
    assert a.kpis()["kpis"]["peak_import_kw"] != b.kpis()["kpis"]["peak_import_kw"]

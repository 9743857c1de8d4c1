from urbangeo.io.gpkg import write_layers
from urbangeo.io.runs import STAGES_TABLE, StageRecord, read_stage_records, stage_table


def test_stage_records_round_trip_and_invalidate(tmp_path):
    path = tmp_path / "run.gpkg"
    assert read_stage_records(path) == {}
    table = stage_table(path, StageRecord("grid", {"cell_size": 1000.0}, {"regions": 9}, 0.5))
    write_layers(path, {STAGES_TABLE: table})
    table = stage_table(path, StageRecord("sample", {"interval": 500.0}, {"sv_points": 88}))
    write_layers(path, {STAGES_TABLE: table}, overwrite=True)
    records = read_stage_records(path)
    assert set(records) == {"grid", "sample"}
    assert records["grid"].params == {"cell_size": 1000.0}
    assert records["grid"].counts == {"regions": 9}
    assert records["sample"].finished  # an ISO time stamp
    # redoing the grid drops the records of the stages after it
    table = stage_table(path, StageRecord("grid", {"cell_size": 250.0}), invalidates=("sample",))
    write_layers(path, {STAGES_TABLE: table}, overwrite=True)
    assert set(read_stage_records(path)) == {"grid"}

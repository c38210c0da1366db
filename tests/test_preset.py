import pytest
from hypothesis import given, settings, strategies as st

from iovtui.sim.preset import PresetError, list_presets, load_preset, preset_from_dict

from conftest import TECHNIQUES, sim_for


def test_every_shipped_preset_loads_and_runs_under_every_technique():
    names = [n for n, _p, origin in list_presets() if origin == "shipped"]
    assert "steady-stream" in names and len(names) >= 10
    for n in names:
        p = load_preset(n)
        assert p.description
        for tech in TECHNIQUES:
            s = sim_for(p, tech, packets=120)
            s.run()
            m = s.metrics
            assert m.offered == 120 == m.delivered + m.dropped + s.in_flight()


def err(data):
    with pytest.raises(PresetError) as e:
        preset_from_dict({"name": "x", "description": "d", **data}, "my.toml")
    return str(e.value)


def test_errors_name_file_key_value_and_allowed():
    e = err({"virtio": {"vhots": True}})
    assert e.startswith("my.toml:") and "virtio.vhots" in e and '"vhost"' in e and "queue_size" in e
    e = err({"virtio": {"queue_size": 100}})
    assert "virtio.queue_size = 100" in e and "power of two" in e
    e = err({"traffic": {"pattern": "bursty"}})
    assert 'traffic.pattern = "bursty"' in e and "steady | burst | poisson | pingpong" in e
    e = err({"nic": {"vfs": 65}})
    assert "nic.vfs = 65" in e and "1..63" in e
    e = err({"vm": [{"name": "a", "mac": "01:00:00:00:00:01"}]})
    assert "vm[0].mac" in e and "unicast" in e
    assert "did you mean" in err({"trafic": {}})


def test_toml_syntax_errors_keep_line_and_column(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('name = "x"\ndescription = "y"\n[traffic\n')
    with pytest.raises(PresetError) as e:
        load_preset(str(f))
    assert str(f) in str(e.value) and "line 3" in str(e.value) and "column" in str(e.value)


def test_unknown_preset_lists_what_exists():
    with pytest.raises(PresetError) as e:
        load_preset("steady-stram")
    assert 'did you mean "steady-stream"' in str(e.value) and "available:" in str(e.value)


def test_user_presets_from_xdg(tmp_path, monkeypatch):
    d = tmp_path / "iovtui" / "presets"
    d.mkdir(parents=True)
    (d / "mine.toml").write_text('name = "mine"\ndescription = "my own"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_preset("mine").description == "my own"
    assert ("mine", d / "mine.toml", "user") in list_presets()


values = st.one_of(st.integers(-10**6, 10**9), st.floats(allow_nan=True), st.text(max_size=8), st.booleans(),
                   st.lists(st.integers(-5, 2000), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
sections = st.sampled_from(["traffic", "nic", "virtio", "emulation", "sriov", "faults", "costs", "bogus"])
keys = st.sampled_from(["pattern", "rate", "sizes", "count", "vfs", "queue_size", "event_idx", "itr_us",
                        "iotlb_entries", "unmapped_dma", "exit_hw_ns", "vlan", "nope"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(sections, st.dictionaries(keys, values, min_size=1, max_size=3), min_size=1, max_size=3),
       st.one_of(st.none(), st.lists(st.dictionaries(st.sampled_from(["name", "mac", "vlan", "ram", "x"]), values), max_size=2)))
def test_malformed_presets_end_in_a_clean_error(secs, vms):
    data = {"name": "x", "description": "d", **secs}
    if vms is not None:
        data["vm"] = vms
    try:
        preset_from_dict(data, "fuzz.toml")
    except PresetError as e:
        assert str(e).startswith("fuzz.toml:") and "\n" not in str(e)

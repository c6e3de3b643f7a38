"""Sharded output from a study whose teacher is a Ray actor pool (a real local Ray instance):
the same parts and manifest, byte for byte, as a one-process run."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from harness.ray_teachers import sleepy
from test_ray import cluster, records  # noqa: F401 - cluster: the fixture, used by name

import mstudy
from mstudy.sinks.sharded import read_manifest, read_sharded
from mstudy.teachers.ray_pool import RayTeacher

pytest.importorskip("ray")


def sharded_study(teacher: Any, out: Path) -> mstudy.Study:
    return mstudy.Study(
        teacher=teacher,
        strategies=[mstudy.Paraphrase(n=2), mstudy.Explain()],
        filters=["length", "dedup"],
        sinks=[
            mstudy.JSONLSink(out / "rows", rows_per_shard=7, workers=2),
            mstudy.ParquetSink(out / "parquet", rows_per_shard=7, workers=2),
        ],
        journal=out / "journal",
        progress=False,
    )


@pytest.mark.usefixtures("cluster")
def test_a_ray_run_writes_the_parts_and_manifest_of_one_process(tmp_path: Path) -> None:
    source = records(40)
    sharded_study(sleepy(0.0), tmp_path / "one").run(source)
    pool = RayTeacher(functools.partial(sleepy, 0.0), replicas=2, batch_size=4, num_cpus=0.5)
    try:
        sharded_study(pool, tmp_path / "ray").run(source)
    finally:
        pool.close()
    for name in ("rows", "parquet"):
        one, ray_out = tmp_path / "one" / name, tmp_path / "ray" / name
        assert len(read_manifest(ray_out, verify=True)) > 3
        files = {p.name: p.read_bytes() for p in one.iterdir()}
        assert {p.name: p.read_bytes() for p in ray_out.iterdir()} == files
        assert list(read_sharded(ray_out)) == list(read_sharded(one))

"""Images on a real S3 server are read by OpenMMLab's own loading transform."""

import io

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration


def test_mmcv_loads_an_image_from_s3(s3_server, s3_bucket, monkeypatch):
    import s3fs

    import selftrain.mm  # noqa: F401  (registers the fsspec backend)
    from selftrain.mm import fileio
    from selftrain.mm.transforms import LoadImageOrMarkUnreadable

    monkeypatch.setenv("SELFTRAIN_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.storage_options()["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.storage_options()["secret"])
    fileio._fs.cache_clear()
    rgb = np.zeros((6, 9, 3), np.uint8)
    rgb[2, 3] = (10, 20, 30)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options())
    fs.pipe_file(f"{s3_bucket}/img/a.png", buf.getvalue())

    load = LoadImageOrMarkUnreadable()
    out = load({"img_path": f"s3://{s3_bucket}/img/a.png"})
    assert out["load_error"] == "" and out["img"].shape == (6, 9, 3)
    assert tuple(out["img"][2, 3]) == (30, 20, 10)  # mmcv decodes to BGR
    missing = load({"img_path": f"s3://{s3_bucket}/img/missing.png"})
    assert "FileNotFoundError" in missing["load_error"]
    fileio._fs.cache_clear()

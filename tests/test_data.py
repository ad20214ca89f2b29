"""wno.training.data: registry, sources (torchvision tree / zip / cache), splits, device batches."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from conftest import write_image_folder, zip_folder
from wno.training import data as D
from wno.training.config import TrainConfig


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------
def test_registry_describes_both_datasets():
    assert set(D.DATASETS) >= {"cifar10", "synthetic"}
    for name, info in D.DATASETS.items():
        assert info.name == name
        assert (info.image_size, info.in_channels, info.num_classes) == (32, 3, 10)
        assert len(info.mean) == len(info.std) == 3 and min(info.std) > 0
        assert len(info.classes) == info.num_classes


def test_config_rejects_unknown_dataset_naming_the_allowed_ones():
    problems = TrainConfig(dataset="imagenet").problems()
    assert any("dataset='imagenet'" in p and "cifar10" in p and "synthetic" in p for p in problems)


def test_synthetic_statistics_match_registry():
    train, _ = D.synthetic()
    x = train.images.float() / 255
    info = D.DATASETS["synthetic"]
    assert torch.allclose(x.mean((0, 2, 3)), torch.tensor(info.mean), atol=0.02)
    assert torch.allclose(x.std((0, 2, 3)), torch.tensor(info.std), atol=0.02)


def test_synthetic_is_deterministic_and_balanced():
    D.synthetic.cache_clear()
    a_train, a_test = D.synthetic()
    D.synthetic.cache_clear()
    b_train, b_test = D.synthetic()
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_test.labels, b_test.labels)
    assert a_train.images.dtype == torch.uint8 and a_train.images.shape == (5000, 3, 32, 32)
    assert torch.bincount(a_train.labels).tolist() == [500] * 10
    assert not torch.equal(a_train.images[:1000], a_test.images)  # test images are new draws


# ------------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------------
def _labels(counts):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])


def test_stratified_indices_keep_class_shares_exactly():
    labels = _labels([100, 300, 600])
    idx = D.stratified_indices(labels, 101, seed=1)
    assert len(idx) == 101 and len(set(idx.tolist())) == 101
    counts = torch.bincount(labels[idx], minlength=3).tolist()
    assert sum(counts) == 101
    for c, share in enumerate([0.1, 0.3, 0.6]):
        assert abs(counts[c] - 101 * share) < 1  # largest-remainder rounding


def test_stratified_indices_deterministic_per_seed():
    labels = _labels([50] * 10)
    assert torch.equal(D.stratified_indices(labels, 40, 3), D.stratified_indices(labels, 40, 3))
    assert not torch.equal(D.stratified_indices(labels, 40, 3), D.stratified_indices(labels, 40, 4))
    with pytest.raises(ValueError, match="cannot draw 501"):
        D.stratified_indices(labels, 501, 0)


def test_make_splits_sizes_disjoint_and_val_independent_of_train_size():
    train, test = D.synthetic()
    tr, val, te = D.make_splits(train, test, val_size=1000, train_size=None, test_size=None)
    assert (len(tr), len(val), len(te)) == (4000, 1000, 1000)
    assert torch.bincount(val.labels).tolist() == [100] * 10
    # disjoint: no validation image appears among the training images
    tr_rows = {bytes(x.numpy()) for x in tr.images}
    assert not any(bytes(x.numpy()) in tr_rows for x in val.images)
    tr_small, val2, te_small = D.make_splits(train, test, val_size=1000, train_size=800,
                                             test_size=300)
    assert (len(tr_small), len(te_small)) == (800, 300)
    assert torch.equal(val.images, val2.images)  # same held-out images whatever the subset
    assert torch.bincount(tr_small.labels).tolist() == [80] * 10
    assert torch.bincount(te_small.labels).tolist() == [30] * 10
    assert {bytes(x.numpy()) for x in tr_small.images} <= tr_rows


@pytest.mark.parametrize("changes, message", [
    (dict(val_size=5000), "val_size=5000 leaves no training images"),
    (dict(val_size=1000, train_size=4001), "train_size=4001 is larger than the 4000"),
    (dict(val_size=10, test_size=1001), "test_size=1001 is larger than the test split"),
])
def test_make_splits_refuses_impossible_sizes(changes, message):
    train, test = D.synthetic()
    args = dict(train_size=None, test_size=None) | changes
    with pytest.raises(ValueError, match=message):
        D.make_splits(train, test, **args)


def test_split_does_not_depend_on_training_seed(tmp_path):
    a = D.load_data(TrainConfig(dataset="synthetic", val_size=500, train_size=1000, seed=0))
    b = D.load_data(TrainConfig(dataset="synthetic", val_size=500, train_size=1000, seed=123))
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)


# ------------------------------------------------------------------------------------------------
# Real CIFAR-10 (the offline zip)
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cifar10_from_zip_full_sizes_and_default_split(cifar10_dir, cifar10_splits):
    train, test = cifar10_splits
    assert train.images.shape == (50_000, 3, 32, 32) and test.images.shape == (10_000, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    # pixel statistics are CIFAR-10's (the JPEG copy is close to the original release)
    mean = (train.images[::10].float() / 255).mean((0, 2, 3))  # every class (files are by class)
    assert torch.allclose(mean, torch.tensor(D.DATASETS["cifar10"].mean), atol=0.02)
    tr, val, te = D.make_splits(train, test, val_size=5000, train_size=None, test_size=None)
    assert (len(tr), len(val), len(te)) == (45_000, 5_000, 10_000)
    assert torch.bincount(val.labels).tolist() == [500] * 10


@pytest.mark.slow
def test_cifar10_cache_is_written_outside_a_read_only_data_dir(cifar10_dir, cifar10_splits,
                                                                tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("WNO_CACHE_DIR", str(cache))
    before = sorted(os.listdir(cifar10_dir))
    train, test, source = D.load_cifar10(cifar10_dir)  # decodes the zip (first run)
    assert source.endswith(".zip")
    written = list(cache.glob("cifar10-*.pt"))
    assert len(written) == 1
    assert sorted(os.listdir(cifar10_dir)) == before  # nothing written beside the data
    assert torch.equal(train.images, cifar10_splits[0].images)
    again, _, _ = D.load_cifar10(cifar10_dir)  # from the cache
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


# ------------------------------------------------------------------------------------------------
# Sources: tree, zip, cache, errors (a tiny CIFAR-shaped set)
# ------------------------------------------------------------------------------------------------
def _check_tiny(train, test):
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (30, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [3] * 10
    # the class-dependent brightness survived decoding, so the labels belong to their images
    for split in (train, test):  # JPEG (train) is lossy, PNG (test) exact
        for img, c in zip(split.images, split.labels.tolist()):
            assert abs(img.float().mean() - (20 + 22 * c)) < 3


def test_tree_and_zip_give_the_same_images(image_folder, image_zip, tmp_path):
    """The same files as a folder tree and as a zip give equal splits, images and labels of
    train and test alike: both splits have 3 images a class in the same label order, so labels
    alone cannot tell a test split read from the wrong files or in another order."""
    tree_train, tree_test, src1 = D.load_cifar10(image_folder)
    zip_train, zip_test, src2 = D.load_cifar10(image_zip)
    assert src1 == str(image_folder) and src2.endswith("cifar10-jpeg.zip")
    _check_tiny(tree_train, tree_test)
    _check_tiny(zip_train, zip_test)
    assert not torch.equal(tree_train.images, tree_test.images)  # so the checks below can fail
    for tree, zipped in ((tree_train, zip_train), (tree_test, zip_test)):
        assert torch.equal(tree.images, zipped.images)
        assert torch.equal(tree.labels, zipped.labels)
    # a zip whose tree sits under one folder, with another name, is found as well
    other = tmp_path / "other"
    other.mkdir()
    zip_folder(image_folder, other / "my-cifar.zip", prefix="cifar10/")
    nested_train, nested_test, _ = D.load_cifar10(other)
    assert torch.equal(nested_train.images, zip_train.images)
    assert torch.equal(nested_test.images, zip_test.images)
    assert torch.equal(nested_test.labels, zip_test.labels)


def test_tree_under_cifar10_subfolder(tmp_path):
    write_image_folder(tmp_path / "data" / "cifar10")
    train, test, source = D.load_cifar10(tmp_path / "data")
    assert source == str(tmp_path / "data" / "cifar10")
    _check_tiny(train, test)


def test_cache_is_used_and_a_damaged_cache_rebuilt(image_zip, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    monkeypatch.setenv("WNO_CACHE_DIR", str(cache))
    first, _, _ = D.load_cifar10(image_zip)
    (path,) = cache.glob("cifar10-*.pt")
    # the cache (not the zip) is read the second time: make the zip unreadable to prove it
    blob = torch.load(path, weights_only=True)
    blob["train_images"][0] = 7
    torch.save(blob, path)
    cached, _, _ = D.load_cifar10(image_zip)
    assert (cached.images[0] == 7).all()
    path.write_bytes(b"not a checkpoint")
    rebuilt, _, _ = D.load_cifar10(image_zip)
    assert torch.equal(rebuilt.images, first.images)
    assert torch.load(path, weights_only=True)["train_images"].shape == (30, 3, 32, 32)


def test_cache_location_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("WNO_CACHE_DIR", str(tmp_path / "env"))
    assert D.cache_dir(tmp_path) == tmp_path / "env"
    monkeypatch.delenv("WNO_CACHE_DIR")
    assert D.cache_dir(tmp_path) == tmp_path / ".wno-cache"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)  # read-only by its mode (also when running as root)
    try:
        assert D.cache_dir(ro) == D.Path.home() / ".cache" / "wno"
    finally:
        ro.chmod(stat.S_IRWXU)


def test_missing_data_says_where_to_put_what(tmp_path, monkeypatch):
    monkeypatch.setenv("WNO_OFFLINE", "1")
    empty = tmp_path / "nodata"
    empty.mkdir()
    with pytest.raises(D.DataMissing) as e:
        D.load_cifar10(empty)
    msg = str(e.value)
    for part in (str(empty), "cifar-10-batches-py", "cifar10-jpeg.zip", "train", "test",
                 "--data-dir", "WNO_DATA_DIR", "airplane", "--dataset synthetic"):
        assert part in msg
    assert os.listdir(empty) == []


def test_corrupt_zip_is_a_clear_error(tmp_path, image_zip):
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (image_zip / "cifar10-jpeg.zip").read_bytes()
    (bad / "cifar10-jpeg.zip").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(D.DataError, match="cifar10-jpeg.zip is not a readable zip"):
        D.load_cifar10(bad)


def test_corrupt_image_names_the_file(tmp_path, image_folder):
    victim = sorted((image_folder / "train" / "cat").iterdir())[1]
    victim.write_bytes(b"\xff\xd8\xff garbage")
    bad = tmp_path / "z"
    bad.mkdir()
    zip_folder(image_folder, bad / "cifar10-jpeg.zip")
    with pytest.raises(D.DataError, match=r"cannot decode image train/cat/0001\.jpg"):
        D.load_cifar10(bad)
    with pytest.raises(D.DataError, match=r"cannot decode image .*cat/0001\.jpg"):
        D.load_cifar10(image_folder)


def test_wrong_classes_and_sizes_are_refused(tmp_path, image_folder):
    (image_folder / "train" / "truck").rename(image_folder / "train" / "lorry")
    with pytest.raises(D.DataError, match="lorry"):
        D.load_cifar10(image_folder)
    other = write_image_folder(tmp_path / "big")
    (other / "test" / "dog" / "0000.png").write_bytes(_png(40, 40))
    with pytest.raises(D.DataError, match=r"\(40, 40\) pixels"):
        D.load_cifar10(other)


def _png(h: int, w: int) -> bytes:
    import warnings

    from torchvision.io import encode_png

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bytes(encode_png(torch.zeros(3, h, w, dtype=torch.uint8)).numpy().tobytes())


# ------------------------------------------------------------------------------------------------
# Device batches
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_split():
    train, _ = D.synthetic()
    return D.Split(train.images[:300].clone(), train.labels[:300].clone())


def _loader(split, **kw):
    info = D.DATASETS["synthetic"]
    args = dict(batch_size=64, mean=info.mean, std=info.std, shuffle=True, seed=3)
    return D.DeviceLoader(split, **(args | kw))


def test_loader_batches_shapes_dtypes_and_every_image_once(small_split):
    loader = _loader(small_split, augment="none")
    loader.set_epoch(1)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    assert xs.dtype == torch.float32 and xs.shape == (300, 3, 32, 32) and ys.dtype == torch.int64
    # normalisation is (x / 255 - mean) / std; undo it to find each original image and its label
    info = D.DATASETS["synthetic"]
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    raw = ((xs * std + mean) * 255).round().to(torch.uint8)
    index = {bytes(img.numpy()): int(lbl) for img, lbl in zip(small_split.images, small_split.labels)}
    assert sorted(index[bytes(img.numpy())] for img in raw) == sorted(small_split.labels.tolist())
    assert [index[bytes(img.numpy())] for img in raw] == ys.tolist()
    assert len({bytes(img.numpy()) for img in raw}) == len(index)


def test_loader_order_depends_only_on_seed_and_epoch(small_split):
    def epoch_batches(loader, epoch):
        loader.set_epoch(epoch)
        return [(x.clone(), y.clone()) for x, y in loader]

    a, b = _loader(small_split, augment="standard"), _loader(small_split, augment="standard")
    a1, b1 = epoch_batches(a, 1), epoch_batches(b, 1)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a1, b1))
    a2 = epoch_batches(a, 2)
    assert not torch.equal(a1[0][1], a2[0][1])
    assert torch.equal(epoch_batches(a, 1)[0][0], a1[0][0])  # epoch 1 again: the same batches
    c1 = epoch_batches(_loader(small_split, augment="standard", seed=4), 1)
    assert not torch.equal(c1[0][1], a1[0][1])


def test_drop_last_and_unshuffled_eval_order(small_split):
    loader = _loader(small_split, shuffle=False, drop_last=True)
    assert len(loader) == 4 and loader.num_images == 256
    ys = torch.cat([y for _, y in loader])
    assert torch.equal(ys, small_split.labels[:256])


def test_crop_flip_gives_each_image_its_own_window_and_mirror():
    x = torch.randint(1, 256, (200, 3, 32, 32), dtype=torch.uint8)
    out = D.crop_flip(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    draws = []
    for i in range(200):
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                if torch.equal(padded[i, :, dy:dy + 32, dx:dx + 32].flip(-1) if f
                               else padded[i, :, dy:dy + 32, dx:dx + 32], out[i])]
        assert hits, f"image {i} is not a (mirrored) window of its padded original"
        draws.append(hits[0])
    assert len({(dy, dx) for dy, dx, _ in draws}) > 30  # per-image offsets, not one per batch
    assert 60 < sum(f for *_, f in draws) < 140  # about half mirrored
    same = D.crop_flip(x, 4, torch.Generator().manual_seed(0))
    assert torch.equal(same, out)
    no_pad = D.crop_flip(x, 0, torch.Generator().manual_seed(0))  # pad 0: only the flips
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(no_pad, x))


def test_randaugment_keeps_shapes_labels_and_leaves_global_rng_alone(small_split):
    loader = _loader(small_split, augment="randaugment")
    loader.set_epoch(1)
    state = torch.get_rng_state()
    plain = _loader(small_split, augment="none")
    plain.set_epoch(1)
    for (x, y), (_, y_plain) in zip(loader, plain):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        assert torch.equal(y, y_plain)  # same order, labels untouched
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("mix", [dict(mixup_alpha=0.8), dict(cutmix_alpha=1.0),
                                 dict(mixup_alpha=0.8, cutmix_alpha=1.0)])
def test_mixup_cutmix_give_soft_labels_from_the_batch(small_split, mix):
    loader = _loader(small_split, augment="standard", num_classes=10, **mix)
    plain = _loader(small_split, augment="none")
    loader.set_epoch(2)
    plain.set_epoch(2)
    for (x, y), (_, hard) in zip(loader, plain):
        assert x.shape == (64, 3, 32, 32) and y.shape == (64, 10) and y.dtype == torch.float32
        assert torch.allclose(y.sum(1), torch.ones(64))
        # each row's weight sits on its own label and the label of one other image of the batch
        own = y[torch.arange(64), hard]
        assert (own >= 0).all() and (own.sum() > 0)
        assert ((y > 1e-6).sum(1) <= 2).all()
        break
    a = [y for _, y in loader]
    b = [y for _, y in loader]
    assert all(torch.equal(p, q) for p, q in zip(a, b))  # seeded per (seed, epoch, step)


def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.delenv("WNO_OFFLINE", raising=False)

    def offline(root, download):  # what torchvision does offline: a partial archive, then an error
        root.mkdir(parents=True, exist_ok=True)
        (root / "cifar-10-python.tar.gz").write_bytes(b"partial")
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(D, "_torchvision_cifar10", offline)
    with pytest.raises(D.DataMissing, match="the download failed: .*Name or service not known"):
        D.load_cifar10(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(D.DataMissing):
        D.load_cifar10(existing)
    assert sorted(os.listdir(existing)) == ["notes.txt"]

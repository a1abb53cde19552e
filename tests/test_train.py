"""`ann-bench train`: metric-learning losses, center loss, samplers, augmentations, the evaluation metrics
(hand-computed), checkpoints that `ann-bench embed` runs, and clear errors. Tiny data: fast on one core."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ann_bench.bench import metrics as M
from ann_bench.cli.embed import embed
from ann_bench.cli.train import train as train_cmd
from ann_bench.errors import InputError
from embeddings import load_embedder
from embeddings.cnn import load_checkpoint
from embeddings.training import TrainConfig, save_checkpoint, train
from embeddings.training.augment import Augment
from embeddings.training.center_loss import CenterLoss, SoftmaxCenterLoss
from embeddings.training.evaluate import ranking_metrics, verification_pairs
from embeddings.training.sampler import m_per_class_batches

torch.set_num_threads(1)
SMALL = {"data": "digits", "train_limit": 400, "test_limit": 200, "batch_size": 64, "epochs": 3}


# ---- metrics, by hand ---------------------------------------------------------------------------------------
def test_average_precision_by_hand():
    # One query of label 0; ranking: relevant, not, relevant, not. R = 2: AP = (1/1 + 2/3) / 2.
    train_labels = np.array([0, 1, 0, 1])
    I = np.array([[0, 1, 2, 3]])
    assert M.average_precision(I, train_labels, np.array([0])) == pytest.approx((1 + 2 / 3) / 2)
    # A third relevant item the ranking never reaches (R = 3): (1 + 2/3) / 3.
    assert M.average_precision(I, train_labels, np.array([0]), relevant=np.array([3])) == pytest.approx(5 / 9)
    # Padding is never relevant; a query whose label no item has scores 0.
    assert M.average_precision(np.array([[-1, 0]]), train_labels, np.array([0])) == pytest.approx(0.5 * 0.5)
    assert M.average_precision(I, train_labels, np.array([7])) == 0.0


def test_class_recall_and_map_at_r_with_relevant_override():
    train_labels = np.array([0, 1, 0, 1, 0])
    I = np.array([[0, 1, 2, 3, 4]])
    q = np.array([0])  # R = 3 relevant: ids 0, 2, 4
    assert M.class_recall_at_k(I, train_labels, q, 1) == pytest.approx(1 / 3)
    assert M.class_recall_at_k(I, train_labels, q, 3) == pytest.approx(2 / 3)
    assert M.class_recall_at_k(I, train_labels, q, 3, relevant=np.array([2])) == pytest.approx(1.0)
    # MAP@R with R = 3: positions 1..3 = rel, not, rel -> (1 + 2/3) / 3; with R overridden to 2: (1) / 2.
    assert M.map_at_r(I, train_labels, q) == pytest.approx(5 / 9)
    assert M.map_at_r(I, train_labels, q, relevant=np.array([2])) == pytest.approx(0.5)


def test_cluster_scores_by_hand():
    perfect = M.cluster_scores(np.array([0, 0, 1, 1]), np.array([5, 5, 3, 3]))  # a renaming is perfect
    assert perfect["nmi"] == pytest.approx(1.0) and perfect["ami"] == pytest.approx(1.0)
    # labels 0 0 1 1, clusters 0 0 0 1: H(Y) = ln 2, H(C) = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.562335,
    # MI = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2 = 0.215762; NMI = MI / ((H(Y) + H(C)) / 2) = 0.343711.
    # With these margins (2, 2) x (3, 1) every contingency table has the same MI, so E[MI] = MI and AMI = 0.
    s = M.cluster_scores(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]))
    assert s["nmi"] == pytest.approx(0.343711, abs=1e-6)
    assert s["ami"] == pytest.approx(0.0, abs=1e-9)


def test_verification_accuracy_by_hand():
    d = np.array([0.1, 0.5, 0.9, 1.3])
    same = np.array([True, True, False, False])
    np.testing.assert_allclose(M.verification_accuracy(d, same, [0.3, 0.7, 1.0, 2.0]), [0.75, 1.0, 0.75, 0.5])
    t, acc = M.best_verification_threshold(d, same)
    assert t == pytest.approx(0.7) and acc == 1.0


def test_ranking_metrics_leave_one_out_by_hand():
    # Unit vectors at 0, 10, 90, 100 degrees: each one's nearest neighbour is its 10-degree twin.
    ang = np.radians([0, 10, 90, 100])
    X = np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32)
    good = ranking_metrics(X, np.array([0, 0, 1, 1]))
    assert good["p_at_1"] == 1.0 and good["map"] == 1.0 and good["map_at_r"] == 1.0 and good["mrr"] == 1.0
    assert good["class_recall_at_1"] == 1.0 and good["recall_at_1"] == 1.0
    # Labels 0 1 0 1: every nearest neighbour is wrong. Rankings: item 0 -> 1, 2, 3 (its twin 2 second);
    # item 1 -> 0, 2, 3 (twin 3 third); item 2 -> 3, 1, 0 (twin 0 third); item 3 -> 2, 1, 0 (twin 1 second).
    # P@1 0, Recall@2 1/2, MRR = MAP = (1/2 + 1/3 + 1/3 + 1/2) / 4 = 5/12 (R = 1), MAP@R 0.
    bad = ranking_metrics(X, np.array([0, 1, 0, 1]))
    assert bad["p_at_1"] == 0.0 and bad["recall_at_1"] == 0.0 and bad["recall_at_2"] == 0.5
    assert bad["recall_at_4"] == 1.0 and bad["class_recall_at_5"] == 1.0
    assert bad["mrr"] == pytest.approx(5 / 12) and bad["map"] == pytest.approx(5 / 12) and bad["map_at_r"] == 0.0
    # Against a separate reference set: query at 5 degrees, reference at 0 (label 1), 90 (label 0), 180 (label 0).
    R = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    Q = np.array([[math.cos(math.radians(5)), math.sin(math.radians(5))]], dtype=np.float32)
    r = ranking_metrics(Q, np.array([0]), R, np.array([1, 0, 0]))
    assert r["p_at_1"] == 0.0 and r["mrr"] == pytest.approx(0.5)
    assert r["map"] == pytest.approx((1 / 2 + 2 / 3) / 2) and r["map_at_r"] == pytest.approx(0.25)
    assert r["class_recall_at_5"] == 1.0 and r["p_at_5"] == pytest.approx(2 / 5)


def test_verification_pairs_are_balanced_and_valid():
    y = np.array([0, 1, 0, 2, 1, 0, 3])
    a, b = verification_pairs(y, 50, seed=1)
    assert len(a) == 100 and (a != b).all()
    assert (y[a[:50]] == y[b[:50]]).all() and (y[a[50:]] != y[b[50:]]).all()


# ---- center loss, sampler, augmentation ---------------------------------------------------------------------
def test_center_loss_value_and_wen_update():
    cl = CenterLoss(num_classes=2, dim=2, alpha=0.5)
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    y = torch.tensor([0, 0])
    assert cl(x, y).item() == pytest.approx(0.5 * (1 + 9) / 2)  # 1/2 mean ||x - c||^2, c = 0
    cl.update_centers(x, y)  # delta = ((0-1) + (0-3)) / (1 + 2) = -4/3; c = 0 - 0.5 * delta = 2/3
    torch.testing.assert_close(cl.centers, torch.tensor([[2 / 3, 0.0], [0.0, 0.0]]))
    # Combined with softmax: cross-entropy + weight * center loss.
    scl = SoftmaxCenterLoss(2, 2, weight=0.1)
    ce = torch.nn.functional.cross_entropy(scl.classifier(x), y)
    assert scl(x, y).item() == pytest.approx(ce.item() + 0.1 * 2.5, rel=1e-6)


def test_m_per_class_batches():
    labels = np.repeat(np.arange(5), 7)
    batches = list(m_per_class_batches(labels, m=3, batch_size=9, n_batches=4, rng=np.random.default_rng(0)))
    assert len(batches) == 4
    for b in batches:
        counts = np.unique(labels[b], return_counts=True)[1]
        assert len(b) == 9 and len(counts) == 3 and (counts == 3).all()
        assert all(len(set(b[labels[b] == c])) == 3 for c in np.unique(labels[b]))  # no repeats within a class
    with pytest.raises(InputError, match="fewer than 2 classes"):
        next(m_per_class_batches(labels, m=8, batch_size=8, n_batches=1, rng=np.random.default_rng(0)))


def test_augment_is_seeded_and_keeps_shape():
    x = torch.randn(6, 1, 12, 12)
    out1 = Augment()(x, torch.Generator().manual_seed(3))
    out2 = Augment()(x, torch.Generator().manual_seed(3))
    assert out1.shape == x.shape and torch.equal(out1, out2) and not torch.equal(out1, x)
    torch.testing.assert_close(Augment(ops=())(x, torch.Generator()), x)
    flipped = Augment(ops=("flip",))(x, torch.Generator().manual_seed(0))
    for i in range(6):  # each image is itself or its mirror
        assert torch.allclose(flipped[i], x[i], atol=1e-5) or torch.allclose(flipped[i], x[i].flip(-1), atol=1e-5)
    with pytest.raises(InputError, match="unknown augmentation"):
        Augment(ops=("blur",))


# ---- training -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss,miner,augment", [("triplet", "semihard", False), ("center", None, True),
                                                ("multi-similarity", "multi-similarity", False)])
def test_training_lowers_the_loss_and_beats_untrained(loss, miner, augment):
    r = train(TrainConfig(**SMALL, loss=loss, miner=miner, augment=augment, baseline=True))
    assert r.epoch_losses[-1] < r.epoch_losses[0]
    assert r.metrics["map_at_r"] > r.baseline["map_at_r"] + 0.05
    assert r.metrics["nmi"] > r.baseline["nmi"]
    assert r.metrics["p_at_5"] > r.baseline["p_at_5"]


def test_training_is_deterministic():
    a = train(TrainConfig(**{**SMALL, "epochs": 1}, loss="arcface"))
    b = train(TrainConfig(**{**SMALL, "epochs": 1}, loss="arcface"))
    assert a.step_losses == b.step_losses
    for k, v in a.checkpoint["state_dict"].items():
        assert torch.equal(v, b.checkpoint["state_dict"][k]), k


def test_unseen_class_split():
    r = train(TrainConfig(**{**SMALL, "epochs": 1}, split="classes", loss="contrastive"))
    meta = r.checkpoint["meta"]
    assert meta["train_classes"] == ["0", "1", "2", "3", "4"] and meta["split"] == "classes"


def _digit_images(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    path = tmp_path / "digits.npy"
    np.save(path, np.round(d.images[:120] * (255 / 16)).astype(np.uint8))
    return path


@pytest.mark.parametrize("arch", ["small_cnn", "mobilenet_v2"])
def test_cli_checkpoint_runs_in_embed(tmp_path, arch):
    ckpt = tmp_path / "model.pt"
    r = CliRunner().invoke(train_cmd, ["--data", "digits", "--arch", arch, "--epochs", "1", "--train-limit", "256",
                                       "--test-limit", "100", "--batch-size", "64", "--dim", "24", "-o", ckpt],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "MAP@R" in r.output and "Precision@1" in r.output
    raw = load_checkpoint(ckpt)  # weights_only=True
    assert raw["arch"] == arch and raw["config"]["dim"] == 24
    doc = json.loads((tmp_path / "model.metrics.json").read_text())
    assert set(doc["metrics"]) >= {"p_at_1", "p_at_5", "class_recall_at_1", "recall_at_32", "map", "map_at_r",
                                   "mrr", "nmi", "ami", "verification"}
    emb = load_embedder(str(ckpt))
    v = emb.embed(np.zeros((3, 8, 8), dtype=np.uint8))
    assert v.shape == (3, 24)
    out = tmp_path / "v.hdf5"
    r = CliRunner().invoke(embed, ["--model", ckpt, "--input", _digit_images(tmp_path), "-o", out,
                                   "--test-size", "20", "-k", "5"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "100 train + 20 test vectors, 24-d" in r.output


def test_text_mlp_head_over_minilm(tmp_path):
    from embeddings.minilm import MiniLM

    if not MiniLM.available():
        pytest.skip("MiniLM is not installed")
    topics = {"food": ["A man is eating food.", "Bake the bread for forty minutes.", "Add salt to the soup.",
                       "The recipe needs two cups of flour.", "Whisk the eggs with sugar."],
              "finance": ["The stock market fell sharply.", "The central bank raised interest rates.",
                          "Bond yields climbed.", "Investors sold shares.", "The currency lost value."],
              "sport": ["The striker scored twice.", "The match ended in a draw.", "The team won the cup.",
                        "The goalkeeper saved a penalty.", "The runner broke the record."]}
    tsv = tmp_path / "texts.tsv"
    tsv.write_text("label\ttext\n" + "".join(f"{k}\t{t}\n" for k, ts in topics.items() for t in ts))
    ckpt = tmp_path / "head.pt"
    r = CliRunner().invoke(train_cmd, ["--data", tsv, "--arch", "mlp", "--loss", "supcon", "--epochs", "3",
                                       "--batch-size", "12", "--test-size", "0.4", "-o", ckpt, "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert load_checkpoint(ckpt)["input"] == {"kind": "text", "features": "minilm"}
    out = tmp_path / "t.hdf5"
    r = CliRunner().invoke(embed, ["--model", ckpt, "--input", tsv, "-o", out, "--test-size", "3", "-k", "3"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "12 train + 3 test vectors, 50-d" in r.output and "3 classes" in r.output


def test_save_checkpoint_is_plain_tensors(tmp_path):
    r = train(TrainConfig(**{**SMALL, "epochs": 0}))
    ckpt, mpath = save_checkpoint(r, tmp_path / "sub" / "m.pt")
    obj = torch.load(ckpt, weights_only=True)
    assert obj["meta"]["epoch_losses"] == [] and mpath.name == "m.metrics.json"


# ---- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--loss", "hinge"], "unknown --loss 'hinge'; choose one of: triplet, contrastive"),
    (["--miner", "easy"], "unknown --miner 'easy'; choose one of: semihard, hard"),
    (["--loss", "arcface", "--miner", "semihard"], "--loss arcface takes no miner"),
    (["--arch", "resnet"], "unknown --arch 'resnet'; choose one of: small_cnn, mobilenet_v2, mlp"),
    (["--data", "cifar"], "unknown --data 'cifar': not one of fashion-mnist, digits"),
    (["--arch", "mlp"], "--arch mlp takes text or array data but --data digits holds image items"),
    (["--split", "random"], "unknown --split 'random'; choose one of: samples, classes"),
    (["--epochs", "-1"], "--epochs must be >= 0"),
])
def test_bad_input_is_one_clear_error(tmp_path, args, message):
    base = {"--data": "digits", "--epochs": "1", "--train-limit": "100", "--test-limit": "50"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    argv = [x for kv in base.items() for x in kv] + ["-o", str(tmp_path / "m.pt")]
    r = CliRunner().invoke(train_cmd, argv)
    assert r.exit_code != 0
    assert isinstance(r.exception, InputError) and message in str(r.exception), r.exception
    assert not (tmp_path / "m.pt").exists()


def test_root_group_turns_train_errors_into_one_line(tmp_path):
    import click

    from ann_bench.cli import AnnBenchGroup

    group = AnnBenchGroup(commands={"train": train_cmd})
    r = CliRunner().invoke(group, ["train", "--data", "digits", "--loss", "x", "-o", tmp_path / "m.pt"])
    assert r.exit_code == 2 and "unknown --loss 'x'" in r.output and "Traceback" not in r.output
    assert isinstance(group, click.Group)


def test_bare_mobilenet_v2_state_dict_of_the_default_architecture_embeds(tmp_path):
    """`--model mobilenet_v2:PATH` loads a bare state_dict of the documented default architecture (input
    channels and dim read from the shapes); any other layout gets one line saying to export TorchScript."""
    import torch

    from embeddings.mobilenet import MobileNetV2

    torch.manual_seed(0)
    model = MobileNetV2(in_channels=1, dim=24)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    emb = load_embedder(f"mobilenet_v2:{tmp_path / 'bare.pt'}")
    images = np.random.default_rng(0).integers(0, 255, size=(4, 28, 28), dtype=np.uint8)
    v = emb.embed(images)
    model.eval()
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(model(torch.from_numpy(images[:, None] / 255.0).float()), dim=1)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)  # the set's metric is angular: the direction is the vector
    assert v.shape == (4, 24) and np.allclose(v, ref.numpy(), atol=1e-5)
    torch.save(MobileNetV2(in_channels=1, dim=24, width=0.5).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(InputError, match="not of the default architecture.*TorchScript"):
        load_embedder(f"mobilenet_v2:{tmp_path / 'narrow.pt'}")
    torch.save({"weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="TorchScript"):
        load_embedder(f"mobilenet_v2:{tmp_path / 'other.pt'}")


def test_train_labels_file_thresholds_device_and_progress(tmp_path):
    """--labels gives .npy features their labels; --thresholds sets the verification thresholds (default: the
    quantiles of the pair distances); --device is checked like embed's; a bar per epoch is drawn."""
    from sklearn.datasets import load_digits

    d = load_digits()
    np.save(tmp_path / "features.npy", d.data[:400].astype(np.float32))
    np.save(tmp_path / "labels.npy", d.target[:400])
    base = ["--data", str(tmp_path / "features.npy"), "--arch", "mlp", "--epochs", "2", "--batch-size", "64",
            "--dim", "8"]
    r = CliRunner().invoke(train_cmd, [*base, "--labels", str(tmp_path / "labels.npy"), "--thresholds",
                                       "0.5,1.0", "-o", tmp_path / "m.pt", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "m.metrics.json").read_text())["metrics"]
    assert list(metrics["verification"]) == ["0.5", "1"] and metrics["verification_thresholds"] == "given"
    r = CliRunner().invoke(train_cmd, [*base, "--labels", str(tmp_path / "labels.npy"), "--baseline",
                                       "-o", tmp_path / "q.pt"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "q.metrics.json").read_text())
    quantiles = list(doc["metrics"]["verification"])
    assert len(quantiles) >= 3 and doc["metrics"]["verification_thresholds"].startswith("quantiles")
    assert list(doc["untrained_metrics"]["verification"]) == quantiles  # the untrained model, same thresholds
    from ann_bench.cli import cli

    labels = ["--labels", str(tmp_path / "labels.npy")]
    for args, message in (([*labels, "--device", "tpu"], "unknown --device 'tpu'"),
                          ([*labels, "--thresholds", "0.5,x"], "--thresholds"),
                          (["--labels", str(tmp_path / "missing.npy")], "missing.npy"),
                          ([], "--labels FILE"),  # no labels at all: it says how to give them
                          ([*labels, "--data", "digits"], "carries its own labels")):
        r = CliRunner().invoke(cli, ["train", *base, *args, "-o", str(tmp_path / "x.pt")])
        assert r.exit_code == 2 and message in r.output, r.output
        assert not (tmp_path / "x.pt").exists()


def test_epoch_progress_reports_batches_loss_and_rate():
    from ann_bench.cli.train import EpochProgress

    with EpochProgress(2) as bar:
        for epoch in range(2):
            for step in range(1, 4):
                bar.step(epoch, step, 3, 64, 1.0 / step)
        task = bar.progress.tasks[-1]
        assert task.description == "epoch 2/2" and task.completed == 3 and task.total == 3
        assert task.fields["loss"] == f"{(1 + 1 / 2 + 1 / 3) / 3:.4f}" and task.fields["rate"].endswith("items/s")

"""The CLI on the models and data people use (issue 15): image folders (--data folder:DIR),
ImageNet-style normalisation (--normalize), Grad-CAM / Grad-CAM++ with --layer or a found layer,
and a Hugging Face model (outputs with .logits) built from a tiny config with random weights."""

import json
import textwrap

import numpy as np
import pytest
import torch

from tests.cli._run import run_cli as _run

Image = pytest.importorskip("PIL.Image")

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)

FACTORY = textwrap.dedent(
    f"""
    import torch
    from torch import nn

    MEAN, STD = {MEAN!r}, {STD!r}


    class Net(nn.Module):
        def __init__(self, normalize_inside=False):
            super().__init__()
            self.normalize_inside = normalize_inside
            self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
                                          nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True))
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            if self.normalize_inside:
                x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
            return self.fc(self.features(x).mean(dim=(2, 3)))


    def plain():
        return Net()


    def normed():
        return Net(normalize_inside=True)


    def hf_resnet():
        from transformers import ResNetConfig, ResNetForImageClassification

        config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                              layer_type="basic", num_labels=2)
        return ResNetForImageClassification(config)
    """
)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A folder with the factory ``cr_real_net``, weights of Net (plain and normalising inside:
    the same state_dict) and of a tiny Hugging Face ResNet, and an image folder of two classes
    (PNG and JPEG of different sizes, 40 x 30 and 36 x 36)."""
    import importlib.util

    folder = tmp_path_factory.mktemp("real")
    (folder / "cr_real_net.py").write_text(FACTORY)
    spec = importlib.util.spec_from_file_location("cr_real_net_local", folder / "cr_real_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    torch.save(module.plain().state_dict(), folder / "net.pt")
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("cats", "dogs")):
        (folder / "images" / cls).mkdir(parents=True)
        for i in range(3):
            base = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
            base[..., c] = 255  # red cats, green dogs
            Image.fromarray(base).save(folder / "images" / cls / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, size=(36, 36, 3), dtype=np.uint8)).save(
            folder / "images" / cls / "z.jpg", quality=90)
    return {"dir": folder, "module": module}


@pytest.fixture
def in_user_dir(user, monkeypatch):
    monkeypatch.chdir(user["dir"])
    return user


FOLDER = ["--data", "folder:images", "--image-size", "16", "--center-crop", "--no-progress", "--examples", "8"]


def test_certify_on_an_image_folder_with_normalize_equals_a_model_normalising_inside(in_user_dir):
    from captum_robust.data import load_image_folder

    common = ["certify", "--weights", "net.pt", *FOLDER, "--n-samples", "16", "--batch-size", "4", "--k", "20",
              "--rho", "0.05"]
    mean = ",".join(str(v) for v in MEAN) + ":" + ",".join(str(v) for v in STD)
    code_a, out_a, err_a = _run([*common, "--model", "cr_real_net:plain", "--normalize", mean, "--out", "norm_a"])
    code_b, _, err_b = _run([*common, "--model", "cr_real_net:normed", "--out", "norm_b"])
    assert code_a == 0 and code_b == 0, err_a + err_b
    a = json.loads((in_user_dir["dir"] / "norm_a" / "results.json").read_text())
    b = json.loads((in_user_dir["dir"] / "norm_b" / "results.json").read_text())
    ds = load_image_folder(in_user_dir["dir"] / "images", size=16, center_crop=True)
    assert a["per_example"]["label"] == ds.tensors[1].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert a["settings"]["normalize"] == {"mean": list(MEAN), "std": list(STD)}
    for key in ("prediction", "overlap", "radius", "overlap_at_radii"):  # the radii are in pixel space in both
        assert np.allclose(np.array(a["per_example"][key], dtype=float), np.array(b["per_example"][key], dtype=float),
                           atol=1e-5), key
    assert "input: the model sees (x - mean) / std per channel" in out_a
    assert "2 classes: cats, dogs; 3 x 16 x 16, 8 images" in out_a
    report = (in_user_dir["dir"] / "norm_a" / "report.md").read_text()
    assert "- input: the model sees (x - mean) / std" in report


def test_evaluate_gradcam_with_normalize_equals_internal_normalisation(in_user_dir):
    common = ["evaluate", "--weights", "net.pt", *FOLDER, "--attribution", "gradcam", "--iterations", "3",
              "--pgd-iterations", "2", "--batch-size", "8", "--eps", "0.02"]
    code_a, out_a, err_a = _run([*common, "--model", "cr_real_net:plain", "--normalize", "0.4,0.5,0.6:0.2,0.25,0.3",
                                 "--out", "ev_a"])
    code_b, out_b, err_b = _run([*common, "--model", "cr_real_net:normed", "--out", "ev_b"])
    assert code_a == 0 and code_b == 0, err_a + err_b
    # the feature layer of a GAP -> linear head, found by find_cam_layers (names of the user's model)
    assert "Grad-CAM (layer features, found by find_cam_layers)" in out_a
    a = json.loads((in_user_dir["dir"] / "ev_a" / "results.json").read_text())["runs"][0]
    b = json.loads((in_user_dir["dir"] / "ev_b" / "results.json").read_text())["runs"][0]
    for key in ("label", "clean_prediction", "prediction", "kept", "kendall"):
        va, vb = a["per_example"][key], b["per_example"][key]
        assert np.allclose(np.array(va, dtype=float), np.array(vb, dtype=float), atol=1e-4, equal_nan=True), key
    norms = [np.array(r["per_example"]["norm"], dtype=float) for r in (a, b)]  # the l-inf sizes, in pixels
    assert np.allclose(*norms, atol=1e-5, equal_nan=True) and np.nanmax(norms[0]) <= 0.02 + 1e-6


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_layer_maps_of_the_cli_equal_captum(in_user_dir, method):
    """The attribution the CLI builds for --attribution gradcam / gradcam++ and --layer gives
    Captum's LayerGradCam (Grad-CAM), or a hand-written Grad-CAM++ (Chattopadhay eq. 19 with
    the exponential score: alpha_k,i = g_k,i^2 / (2 g_k,i^2 + sum_j A_k,j g_k,i^3), map =
    ReLU(sum_k w_k A_k) with w_k = sum_i alpha_k,i ReLU(g_k,i))."""
    import argparse

    from captum.attr import LayerGradCam

    from captum_robust.cli._layers import gradcam_parts
    from captum_robust.data import Normalize

    torch.manual_seed(1)
    user_model = in_user_dir["module"].plain().eval()
    model = Normalize(user_model, MEAN, STD)
    x, y = torch.rand(3, 3, 12, 12), torch.tensor([0, 1, 1])
    args = argparse.Namespace(attribution=method, layer="features.2")
    attribution, name, how = gradcam_parts(user_model, model, args, x[:1], y[:1])
    assert (name, how) == ("features.2", "--layer")
    maps = attribution.attribute(x, target=y)
    if method == "gradcam":
        ref = LayerGradCam(model, user_model.features[2]).attribute(x, target=y)
    else:
        acts = []
        # keep the conv's output as produced: the in-place ReLU after it acts on a copy
        handle = user_model.features[2].register_forward_hook(lambda m, i, o: acts.append(o) or o.clone())
        logits = model(x)
        handle.remove()
        a = acts[0]
        (g,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), a)
        # the paper's exp(score) factors cancel in alpha; its ReLU(exp(score) g) is ReLU(g) up to that factor
        total = a.sum(dim=(2, 3), keepdim=True)  # sum_j A_k,j
        denom = 2 * g**2 + total * g**3
        alpha = torch.where(denom != 0, g**2 / torch.where(denom != 0, denom, 1.0), 0.0)
        weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
        ref = torch.relu((weights * a).sum(dim=1, keepdim=True))
    assert torch.allclose(maps, ref, rtol=1e-4, atol=1e-6)


def test_hugging_face_resnet_on_an_image_folder(in_user_dir):
    pytest.importorskip("transformers")
    module = in_user_dir["module"]
    torch.manual_seed(0)
    torch.save(module.hf_resnet().state_dict(), in_user_dir["dir"] / "hf.pt")
    base = ["evaluate", "--model", "cr_real_net:hf_resnet", "--weights", "hf.pt", "--data", "folder:images",
            "--image-size", "32", "--center-crop", "--examples", "4", "--no-progress", "--iterations", "2",
            "--pgd-iterations", "0", "--normalize", "imagenet"]
    code, out, err = _run([*base, "--attribution", "gradcam++", "--out", "hf_auto"])
    assert code == 0, err
    assert "Grad-CAM++ (layer resnet.encoder.stages.1, found by find_cam_layers)" in out
    assert "its .logits are the class scores" in out
    code, out, err = _run([*base, "--attribution", "cam", "--out", "hf_cam"])
    assert code == 0, err
    assert "CAM (layer resnet.encoder.stages.1, classifier classifier.1)" in out
    code, out, err = _run([*base, "--attribution", "gradcam", "--layer", "resnet.encoder.stages.0", "--out", "hf_l"])
    assert code == 0, err
    assert "Grad-CAM (layer resnet.encoder.stages.0, --layer)" in out
    code, out, err = _run(["certify", *base[1:12], "--no-progress", "--n-samples", "8", "--normalize", "imagenet",
                           "--out", "hf_cert"])
    assert code == 0, err
    cert = json.loads((in_user_dir["dir"] / "hf_cert" / "results.json").read_text())
    assert cert["settings"]["n_features"] == 3 * 32 * 32 and len(cert["per_example"]["radius"]) == 4
    code, out, err = _run([*base, "--attribution", "gradcam", "--layer", "resnet.nope", "--out", "hf_bad"])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "--layer 'resnet.nope' is not a submodule of the model; submodules include: resnet," in err


@pytest.mark.parametrize("extra, message", [
    (["--normalize", "0.5,0.5:0.2"], "argument --normalize: expected as many standard deviations as means"),
    (["--normalize", "0.5:0"], "argument --normalize: expected finite means and standard deviations > 0"),
    (["--normalize", "nonsense"], "argument --normalize: expected MEAN:STD"),
    (["--normalize", "0.5,0.5:0.2,0.2"], "--normalize has 2 per-channel values but the images of --data have 3"),
    (["--data", "folder:missing"], "--data 'folder:missing': image folder data_dir"),
    (["--channels", "1"], "the model fails on an input of shape (1, 1, 16, 16) from --data 'folder:images'"),
    ([], "z.jpg' is 36x36 pixels but"),
    (["--data", "folder"], "folder needs a location, e.g. --data folder:DIR"),
    (["--data", "digits", "--center-crop"], "--center-crop applies to --data folder:DIR only, not to digits"),
    (["--attribution", "gradcam", "--layer", "fc"], "--attribution gradcam does not apply "
     "with layer 'fc'"),
])
def test_errors_are_one_line_with_exit_two(in_user_dir, extra, message):
    argv = ["evaluate", "--model", "cr_real_net:plain", "--weights", "net.pt", "--no-progress", "--examples", "2",
            "--out", "err_out", *extra]
    if "--data" not in extra:
        argv += ["--data", "folder:images"]
    if "digits" not in extra and "folder" not in extra and "--image-size" not in extra and "36x36" not in message:
        argv += ["--image-size", "16", "--center-crop"]
    code, out, err = _run(argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    if message.startswith("argument "):  # argparse's own: usage lines, then one error line
        assert lines[0].startswith("usage:") and lines[-1].startswith("captum-robust evaluate: error:")
    else:
        assert len(lines) == 1, err
    assert message in lines[-1], err
    assert not (in_user_dir["dir"] / "err_out").exists()

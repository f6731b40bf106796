"""The head contract (feature layers), the registry's declared default heads, and the models stage's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import mammocad.models
from mammocad.models import create_model, default_head, list_heads, list_models
from mammocad.models.heads import head_feature_layers, register_head, unregister_head
from mammocad.models.net import MammoNet

#: ``default_feature_layers`` of every head before heads declared them (recorded from the old
#: name-guessing code): the declaration must keep evaluation's latent layers exactly the same.
LAYERS_BEFORE = {
    "flatten_dense": ["backbone", "head.dense.hidden"],
    "gagm_dense": ["backbone", "head.pool", "head.dense.hidden"],
    "gagm_se_dense": ["backbone", "head.pool", "head.se", "head.dense.hidden"],
    "gap": ["backbone", "head.pool"],
    "gap_dense": ["backbone", "head.pool", "head.dense.hidden"],
    "gap_se_dense": ["backbone", "head.pool", "head.se", "head.dense.hidden"],
    "lesion_map": ["backbone", "head.patch_classifier"],
}


def test_every_registered_head_is_covered():
    assert sorted(LAYERS_BEFORE) == list_heads()  # a new head adds its expected layers above


@pytest.mark.parametrize("head", sorted(LAYERS_BEFORE))
def test_latent_layers_are_unchanged(head):
    from mammocad.evaluation.predictions import default_feature_layers

    with torch.device("meta"):
        net = create_model("baseline_cnn", num_classes=3, head=head, input_size=32)
    assert net.latent_layers() == LAYERS_BEFORE[head]
    assert default_feature_layers(net) == LAYERS_BEFORE[head]
    modules = dict(net.named_modules())
    assert all(name in modules for name in net.latent_layers())


class _Undeclared(nn.Module):
    """A head that follows every rule but the feature-layer declaration."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def features(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(fmap))


class _Misnamed(_Undeclared):
    def feature_layers(self) -> list[str]:
        return ["pooling"]  # no such submodule


def test_head_without_declaration_fails_loudly():
    with pytest.raises(TypeError, match="feature_layers"):
        head_feature_layers(_Undeclared(4, 2))
    with pytest.raises(ValueError, match="pooling"):
        head_feature_layers(_Misnamed(4, 2))
    register_head("test_undeclared", lambda channels, num_classes, *_: _Undeclared(channels, num_classes))
    try:
        with pytest.raises(TypeError, match="_Undeclared does not declare feature_layers"):
            create_model("baseline_cnn", num_classes=2, head="test_undeclared", input_size=32)
    finally:
        unregister_head("test_undeclared")
    assert "test_undeclared" not in list_heads()
    # A head handed to MammoNet directly (not built by name) is refused when its layers are asked for.
    net = create_model("baseline_cnn", num_classes=2, input_size=32)
    net.head = _Undeclared(256, 2)
    with pytest.raises(TypeError, match="feature_layers"):
        net.latent_layers()


def test_duplicate_head_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_head("gap", lambda *args: nn.Identity())


@pytest.mark.parametrize("name", list_models())
def test_default_head_is_the_head_create_model_uses(name):
    with torch.device("meta"):  # no weights allocated
        net = create_model(name, num_classes=2, in_chans=1)
    assert isinstance(net, MammoNet)
    assert default_head(name) == net.head_name


def test_default_head_of_a_timm_pass_through():
    assert default_head("resnet18") == "gap"
    with torch.device("meta"):
        assert create_model("resnet18", num_classes=2).head_name == "gap"


def _imported_models_modules(path: Path, package_dir: Path) -> set[str]:
    """Every ``mammocad.models.*`` module a file imports, module-level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mammocad.models"):
            for alias in node.names:  # ``from mammocad.models import backbones``: a submodule
                sub = f"{node.module}.{alias.name}"
                stem = package_dir.parent / sub.replace(".", "/")
                is_module = stem.with_suffix(".py").exists() or (stem / "__init__.py").exists()
                found.add(sub if is_module else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mammocad.models")}
    return found


def test_models_stage_has_no_import_cycle():
    package_dir = Path(mammocad.models.__file__).parent
    root = package_dir.parent.parent  # src/

    def module_name(path: Path) -> str:
        parts = path.relative_to(root).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    graph = {module_name(p): _imported_models_modules(p, root / "mammocad") for p in package_dir.rglob("*.py")}
    # The package __init__ imports every builder to register it; importing a submodule runs it
    # first anyway, so only edges between modules (not back to the package) can form a cycle.
    graph.pop("mammocad.models")
    for edges in graph.values():
        edges.discard("mammocad.models")
    assert {"mammocad.models.registry", "mammocad.models.backbones", "mammocad.models.builders"} <= set(graph)

    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, f"import cycle: {' -> '.join([*visiting[visiting.index(node) :], node])}"
        visiting.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_ablation_declarations_name_registered_heads() -> None:
    """Each head's ``without`` entries name a registered head that lacks exactly that component."""
    from mammocad.models.heads import HEAD_COMPONENTS, HEAD_WITHOUT, HEADS, head_without, heads_with

    assert heads_with("gagm") == ["gagm_dense", "gagm_se_dense"]
    assert heads_with("sevector") == ["gagm_se_dense", "gap_se_dense"]
    for head, parts in HEAD_WITHOUT.items():
        for component, other in parts.items():
            assert component in HEAD_COMPONENTS and other in HEADS and other != head
            assert head_without(other, component) is None  # removing it twice is not possible
    assert head_without("gap", "gagm") is None


def test_a_model_registered_without_a_default_head_picks_its_own(monkeypatch):
    """A plug-in builder may leave the default to itself: it gets head=None, and default_head builds to learn it."""
    from mammocad.models import builders, create_model, default_head
    from mammocad.models.baseline import _build_baseline

    monkeypatch.setattr(builders, "_MODELS", dict(builders._MODELS))  # the registration ends with the test

    @builders.register_model("plugin_cnn")
    def plugin_cnn(head: str | None = None, **kwargs):
        return _build_baseline(name="plugin_cnn", widths=(8, 16), head=head or "gap_dense", **kwargs)

    assert default_head("plugin_cnn", 64) == "gap_dense"
    assert create_model("plugin_cnn", num_classes=2, input_size=64).head_name == "gap_dense"
    assert create_model("plugin_cnn", num_classes=2, input_size=64, head="gap").head_name == "gap"

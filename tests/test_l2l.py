"""zaplib's second-order meta-gradient against an independent implementation: learn2learn's MAML
(Arnold et al. 2020; MAML: Finn et al. 2017).

On one meta-ASB episode (Frati et al. 2023, Alg. 1 line 15: K single-image SGD steps on one class,
then the outer loss on the K inner images plus "remember" images, differentiated with respect to
the weights at the start of the inner loop), :func:`zaplib.pretraining.meta_gradient` must equal the
gradient learn2learn's ``MAML.clone()`` / ``adapt()`` gives, parameter by parameter, to 1e-5.
The comparison is shown to have teeth: learn2learn's *first-order* MAML on the same episode must
differ by more than that tolerance.

learn2learn is an optional extra (``make l2l`` / ``tools/install_l2l.sh``). Without it these tests
skip, except when ``ZAPLIB_REQUIRE_L2L=1`` (CI sets it after building learn2learn): then a missing
learn2learn is a failure, so CI cannot pass by skipping them.
"""
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from zaplib import pretraining
from zaplib.models import ANML, OmniglotConvNet

with warnings.catch_warnings():
    # learn2learn imports gym, which warns at import that it is unmaintained.
    warnings.simplefilter("ignore")
    try:
        import learn2learn
        L2L_IMPORT_ERROR = None
    except ImportError as exc:  # the optional extra is not installed
        learn2learn = None
        L2L_IMPORT_ERROR = exc

TOLERANCE = 1e-5
K_INNER = 20  # single-image inner steps, as in meta-ASB
N_REMEMBER = 16  # meta-ASB uses 64; fewer keeps the test fast and changes nothing in the algebra
N_CLASSES = 10
INNER_LR = 0.1


@pytest.fixture
def l2l():
    """The learn2learn module; skip when it is missing, fail instead when CI requires it."""
    if learn2learn is None:
        reason = (f"learn2learn is not installed ({L2L_IMPORT_ERROR}); "
                  "install it with `make l2l` or tools/install_l2l.sh")
        if os.environ.get("ZAPLIB_REQUIRE_L2L") == "1":
            pytest.fail(f"ZAPLIB_REQUIRE_L2L=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return learn2learn


def _episode(seed=0):
    """One meta-ASB episode on random images of Omniglot's shape (1×28×28), in float64: the inner
    images all belong to one class; the outer batch is the inner images plus random others."""
    g = torch.Generator().manual_seed(seed)
    inner_x = torch.rand(K_INNER, 1, 28, 28, generator=g, dtype=torch.float64)
    inner_y = torch.full((K_INNER,), 3)
    remember_x = torch.rand(N_REMEMBER, 1, 28, 28, generator=g, dtype=torch.float64)
    remember_y = torch.randint(N_CLASSES, (N_REMEMBER,), generator=g)
    return inner_x, inner_y, torch.cat([inner_x, remember_x]), torch.cat([inner_y, remember_y])


def _l2l_meta_gradient(l2l, model, inner_x, inner_y, outer_x, outer_y, first_order):
    """The MAML meta-gradient the way learn2learn's documentation computes it: clone the wrapped
    model, ``adapt`` on each inner image in turn, then differentiate the outer loss of the clone
    with respect to the original parameters."""
    maml = l2l.algorithms.MAML(model, lr=INNER_LR, first_order=first_order)
    learner = maml.clone()
    for i in range(len(inner_x)):
        learner.adapt(F.cross_entropy(learner(inner_x[i : i + 1]), inner_y[i : i + 1]))
    outer_loss = F.cross_entropy(learner(outer_x), outer_y)
    names, params = zip(*model.named_parameters())
    return dict(zip(names, torch.autograd.grad(outer_loss, params)))


def _l2l_meta_gradient_subset(l2l, model, inner_x, inner_y, outer_x, outer_y, adapted):
    """Second-order MAML adapting only the parameters named by ``adapted`` (ANML's inner loop),
    through learn2learn's lower-level ``maml_update``: a ``None`` gradient leaves a parameter as it
    is, while the outer loss still reaches it."""
    maml = l2l.algorithms.MAML(model, lr=INNER_LR)
    learner = maml.clone()
    for i in range(len(inner_x)):
        loss = F.cross_entropy(learner(inner_x[i : i + 1]), inner_y[i : i + 1])
        named = list(learner.module.named_parameters())
        inner = [p for n, p in named if adapted(n)]
        grads = iter(torch.autograd.grad(loss, inner, create_graph=True))
        l2l.algorithms.maml_update(learner.module, INNER_LR,
                                   [next(grads) if adapted(n) else None for n, _ in named])
    outer_loss = F.cross_entropy(learner(outer_x), outer_y)
    names, params = zip(*model.named_parameters())
    return dict(zip(names, torch.autograd.grad(outer_loss, params)))


def _max_abs_difference(a, b):
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_meta_asb_meta_gradient_equals_learn2learn_maml(l2l):
    torch.manual_seed(0)
    model = OmniglotConvNet(channels=8, num_classes=N_CLASSES).double()
    episode = _episode()

    ours, info = pretraining.meta_gradient(model, *episode, INNER_LR)
    theirs = _l2l_meta_gradient(l2l, model, *episode, first_order=False)
    theirs_first_order = _l2l_meta_gradient(l2l, model, *episode, first_order=True)

    # The episode must actually train (a vanishing gradient would make every comparison pass).
    assert info["inner_losses"][-1] < info["inner_losses"][0]
    assert all(float(g.abs().max()) > 1e-3 for g in ours.values() if g.dim() > 1)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=TOLERANCE, rtol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")
    # Teeth: a silently first-order meta-gradient would be caught by this tolerance.
    assert _max_abs_difference(ours, theirs_first_order) > 100 * TOLERANCE
    # ... and zaplib's own first-order mode is learn2learn's first-order MAML.
    ours_first_order, _ = pretraining.meta_gradient(model, *episode, INNER_LR, first_order=True)
    assert _max_abs_difference(ours_first_order, theirs_first_order) < TOLERANCE


def test_anml_subset_meta_gradient_equals_learn2learn_maml(l2l):
    """ANML adapts the representation net and head in the inner loop, not the neuromodulatory net
    (``pretraining.anml_inner_params``); the meta-gradient still reaches every parameter."""
    torch.manual_seed(0)
    model = ANML(channels=4, nm_channels=4, num_classes=N_CLASSES).double()
    episode = _episode(seed=1)

    ours, _ = pretraining.meta_gradient(model, *episode, INNER_LR, inner_params=pretraining.anml_inner_params)
    theirs = _l2l_meta_gradient_subset(l2l, model, *episode, adapted=pretraining.anml_inner_params)
    theirs_all = _l2l_meta_gradient(l2l, model, *episode, first_order=False)

    nm_names = [n for n in ours if n.startswith("nm.")]
    assert nm_names and max(float(ours[n].abs().max()) for n in nm_names) > 1e-6
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=TOLERANCE, rtol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")
    # Teeth: adapting every parameter (the wrong subset) gives a different meta-gradient.
    assert _max_abs_difference(ours, theirs_all) > 100 * TOLERANCE

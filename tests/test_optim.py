"""simgan.optim.adam: the fused update every training loop uses must be Adam, with the lr and
betas it is given (a fused kernel that silently dropped betas would still train, worse)."""

import pytest
import torch

from simgan.optim import adam


def _train(make, steps=20):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = make(net.parameters())
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 8, generator=g)
        loss = (net(x) - x[:, :2]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()]), opt


@pytest.mark.parametrize("lr,betas", [(1e-3, (0.9, 0.999)), (2e-4, (0.5, 0.999)), (6e-3, [0.8, 0.99])])
def test_adam_takes_the_same_steps_as_torch_reference_adam(lr, betas):
    ours, opt = _train(lambda ps: adam(ps, lr, betas))
    ref, _ = _train(lambda ps: torch.optim.Adam(ps, lr=lr, betas=tuple(betas), foreach=False))
    assert opt.defaults["fused"] is True
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # and the betas matter: the default ones give different weights after these steps
    other, _ = _train(lambda ps: torch.optim.Adam(ps, lr=lr, betas=(0.0, 0.9), foreach=False))
    assert not torch.allclose(ours, other, atol=1e-4)


def test_an_optimizer_state_saved_by_the_per_tensor_adam_resumes_in_the_fused_one():
    # GAN checkpoints written before the switch hold the per-tensor Adam's state
    _, old = _train(lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False), steps=3)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    new = adam(net.parameters(), 1e-3)
    new.load_state_dict(old.state_dict())
    net(torch.randn(4, 8)).sum().backward()
    new.step()
    assert all(float(s["step"]) == 4 for s in new.state.values())

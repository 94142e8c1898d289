"""``convert(model)``: swap torch.nn's recurrent modules for rnnkern's in place."""
from torch import nn

from . import modules

# torch.nn class -> rnnkern class. Order matters only for subclasses.
_REPLACEMENTS = (
    (nn.LSTM, modules.LSTM),
    (nn.GRU, modules.GRU),
    (nn.RNN, modules.RNN),
)


def _replacement(module: nn.Module):
    for source, target in _REPLACEMENTS:
        if type(module) is source:
            return target
    return None


def _converted(module: nn.Module, target) -> nn.Module:
    # Same constructor arguments, then the very same Parameter objects, so that
    # optimizers and anything else holding them keep working.
    kwargs = dict(
        input_size=module.input_size,
        hidden_size=module.hidden_size,
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        dropout=module.dropout,
        bidirectional=module.bidirectional,
    )
    if target is modules.RNN:
        kwargs["nonlinearity"] = module.nonlinearity
    if target is modules.LSTM:
        kwargs["proj_size"] = module.proj_size
    first = next(module.parameters())
    new = target(**kwargs, device="meta", dtype=first.dtype)
    for name, param in module.named_parameters(recurse=False):
        setattr(new, name, param)
    new.train(module.training)
    new._init_flat_weights()
    return new


def convert(model: nn.Module) -> nn.Module:
    """Replace every ``torch.nn.RNN/LSTM/GRU`` inside ``model`` (or ``model``
    itself) by the rnnkern module of the same configuration holding the same
    parameters. Returns the converted model; submodules are replaced in place.
    Subclasses of the torch.nn classes are left alone (their ``forward`` may
    be customised).
    """
    target = _replacement(model)
    if target is not None:
        return _converted(model, target)
    for name, child in model.named_children():
        setattr(model, name, convert(child))
    return model

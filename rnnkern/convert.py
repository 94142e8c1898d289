"""``convert(model)``: swap torch.nn's recurrent modules for rnnkern's in place."""
from torch import nn

from . import cells, modules

# Exact torch.nn class -> rnnkern class (subclasses of torch.nn's are left alone:
# their forward may be customised).
_REPLACEMENTS = {
    nn.RNN: modules.RNN,
    nn.LSTM: modules.LSTM,
    nn.GRU: modules.GRU,
    nn.RNNCell: cells.RNNCell,
    nn.LSTMCell: cells.LSTMCell,
    nn.GRUCell: cells.GRUCell,
}


def _constructor_kwargs(module):
    if isinstance(module, nn.RNNCellBase):
        kwargs = dict(input_size=module.input_size, hidden_size=module.hidden_size,
                      bias=module.bias)
    else:
        kwargs = dict(input_size=module.input_size, hidden_size=module.hidden_size,
                      num_layers=module.num_layers, bias=module.bias,
                      batch_first=module.batch_first, dropout=module.dropout,
                      bidirectional=module.bidirectional)
        if isinstance(module, nn.LSTM):
            kwargs["proj_size"] = module.proj_size
    if isinstance(module, (nn.RNN, nn.RNNCell)):
        kwargs["nonlinearity"] = module.nonlinearity
    return kwargs


def _converted(module: nn.Module, target) -> nn.Module:
    # Same configuration, built on the meta device (no init cost), then given
    # the very same Parameter objects, so optimizers holding them keep working.
    new = target(**_constructor_kwargs(module), device="meta")
    for name, param in module.named_parameters(recurse=False):
        setattr(new, name, param)
    new.train(module.training)
    if isinstance(new, nn.RNNBase):
        new._init_flat_weights()
    return new


def convert(model: nn.Module) -> nn.Module:
    """Replace every ``torch.nn.RNN/LSTM/GRU`` and ``RNNCell/LSTMCell/GRUCell``
    inside ``model`` (or ``model`` itself) by the rnnkern module of the same
    configuration holding the same parameters. Returns the converted model;
    submodules are replaced in place. Subclasses of the torch.nn classes are
    left alone (their ``forward`` may be customised).
    """
    target = _REPLACEMENTS.get(type(model))
    if target is not None:
        return _converted(model, target)
    for name, child in model.named_children():
        setattr(model, name, convert(child))
    return model

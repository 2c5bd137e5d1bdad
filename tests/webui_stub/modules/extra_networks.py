"""Stand-in of modules/extra_networks.py: `<name:args>` prompt parsing and activation.

Only the built-in Lora's `lora` network is registered (extra_networks_lora.ExtraNetworkLora)."""
from __future__ import annotations

import re
from collections import defaultdict

re_extra_net = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    def __init__(self, items=None):
        self.items = items or []
        self.positional = [x for x in self.items if '=' not in x]
        self.named = dict(x.split('=', 1) for x in self.items if '=' in x)

    def __eq__(self, other):
        return self.items == other.items


class ExtraNetworkLora:
    name = "lora"

    def activate(self, p, params_list):
        import networks
        names = [params.positional[0] for params in params_list]
        te = [float(params.positional[1]) if len(params.positional) > 1 else 1.0 for params in params_list]
        unet = [float(params.positional[2]) if len(params.positional) > 2 else m for params, m in zip(params_list, te)]
        networks.load_networks(names, te, unet)
        networks.apply_networks(p.sd_model)

    def deactivate(self, p):
        pass


extra_network_registry = {"lora": ExtraNetworkLora()}


def parse_prompt(prompt):
    res = defaultdict(list)

    def found(m):
        res[m.group(1)].append(ExtraNetworkParams(items=m.group(2).split(":")))
        return ""

    return re.sub(re_extra_net, found, prompt), res


def parse_prompts(prompts):
    res, extra_data = [], None
    for prompt in prompts:
        updated, parsed = parse_prompt(prompt)
        extra_data = extra_data or parsed
        res.append(updated)
    return res, extra_data


def activate(p, extra_network_data):
    for name, network in extra_network_registry.items():
        network.activate(p, extra_network_data.get(name, []))


def deactivate(p, extra_network_data):
    for network in extra_network_registry.values():
        network.deactivate(p)

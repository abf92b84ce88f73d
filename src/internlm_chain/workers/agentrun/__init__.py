"""Runs INSIDE the agent runtime (lagent + agentlego): our glue over Lagent and AgentLego.

Started as `PYTHONPATH=<workers dir> python -m agentrun ...`; never imports internlm_chain or pydantic.
Modules import each other relatively, so `toolspec` and `bench_check` (stdlib only) can also be imported by
the ichain process for validation.
"""

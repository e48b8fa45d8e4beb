"""Trainers that consume stepdata pairs tables (Step-DPO, SCDPO, DPO, SFT warm-up).

Heavy dependencies (torch, transformers, TRL) are imported inside the trainer
modules only, so ``import trainers`` stays cheap.
"""

"""Pre-flight hooks: the nanoGPT recipe (no dependency), and the transformers / Lightning
callbacks against the real libraries when they are installed (tiny models on CPU, no Hub),
skipped with the reason otherwise."""

import pytest
import vramplan
from conftest import SEED_KEYS
from vramplan.callbacks import DoesNotFit, peft_overrides, preflight


def test_the_nanogpt_recipe_prints_the_verdict_and_strict_stops():
    # train.py: config = {k: globals()[k] for k in config_keys}; then the two lines.
    lines = []
    with pytest.raises(DoesNotFit) as e:
        preflight(SEED_KEYS, gpu="rtx3060", strict=True, print_fn=lines.append)
    assert lines == [str(e.value)]
    assert lines[0].startswith("vramplan: DOES NOT FIT on NVIDIA GeForce RTX 3060")
    assert e.value.result.first_overflow_phase == "eval"
    # Not strict: the verdict, and the run goes on.
    r = preflight(SEED_KEYS, gpu="rtx3060", print_fn=lines.append)
    assert r.fits is False and len(lines) == 2
    ok = preflight({**SEED_KEYS, "batch_size": 4}, gpu="rtx3060", strict=True,
                   print_fn=lines.append)
    assert ok.fits is True and lines[-1].startswith("vramplan: FITS on NVIDIA GeForce RTX 3060")


class LoraConfig:
    """PEFT's LoraConfig fields the callbacks read."""

    r = 16
    target_modules = {"v_proj", "q_proj"}
    lora_dropout = 0.05


class PeftModel:
    peft_config = {"default": LoraConfig()}
    config = None


def test_peft_lora_settings_become_lora_keys():
    assert peft_overrides(PeftModel()) == {
        "lora_rank": 16,
        "lora_targets": "q_proj,v_proj",
        "lora_dropout": 0.05,
    }


def tiny_gpt2():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    pytest.importorskip("torch", reason="torch is not installed")
    pytest.importorskip("accelerate", reason="accelerate (the Trainer needs it) is not installed")
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100,
                                     n_positions=64)
    return transformers, transformers.GPT2LMHeadModel(config)


class Tokens:
    """Eight sequences of 16 tokens, labels = inputs: a causal LM's data."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        import torch

        ids = torch.arange(16) % 100
        return {"input_ids": ids, "labels": ids}


def trainer_with(transformers, model, callback, tmp_path):
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        begun = 0

        def on_step_begin(self, args, state, control, **kwargs):
            Steps.begun += 1

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1, use_cpu=True,
        report_to=[], save_strategy="no",
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(),
                                   callbacks=[callback, Steps])
    return trainer, Steps


def test_trainer_callback_checks_the_live_model_and_arguments(tmp_path):
    transformers, model = tiny_gpt2()
    lines = []
    cb = vramplan.callbacks.VramplanTrainerCallback(gpu="rtx3060", block_size=16,
                                                    print_fn=lines.append)
    trainer, steps = trainer_with(transformers, model, cb, tmp_path)
    trainer.train()
    assert steps.begun == 1
    assert lines[-1].startswith("vramplan: FITS on NVIDIA GeForce RTX 3060")
    c = cb.result.config
    # The live model.config and TrainingArguments: 2 x 32 GPT-2, batch 2, fp32 (no bf16).
    assert (c["n_layer"], c["n_embd"], c["vocab_size"]) == (2, 32, 100)
    assert (c["batch_size"], c["block_size"], c["dtype"]) == (2, 16, "float32")


def test_strict_trainer_callback_stops_before_the_first_step(tmp_path):
    transformers, model = tiny_gpt2()
    # Batch 4096 x 1024 tokens of a tiny model still needs far more than 12 GB of logits.
    cb = vramplan.callbacks.VramplanTrainerCallback(
        gpu="rtx3060", block_size=64, strict=True, batch_size=65536, print_fn=lambda _: None
    )
    trainer, steps = trainer_with(transformers, model, cb, tmp_path)
    with pytest.raises(DoesNotFit):
        trainer.train()
    assert steps.begun == 0


def test_lightning_callback_stops_a_run_that_does_not_fit():
    pytest.importorskip("torch", reason="torch is not installed")
    L = pytest.importorskip("lightning", reason="lightning is not installed")
    import torch

    class Module(L.LightningModule):
        steps = 0

        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, i):
            Module.steps += 1
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 4)),
                                       batch_size=2)
    lines = []
    fits = vramplan.callbacks.VramplanLightningCallback(
        {"n_layer": 2, "n_head": 2, "n_embd": 32, "vocab_size": 100, "block_size": 16,
         "batch_size": 2, "compile": False}, gpu="rtx3060", strict=True, print_fn=lines.append,
    )
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        accumulate_grad_batches=2, callbacks=[fits])
    trainer.fit(Module(), data)
    assert lines[-1].startswith("vramplan: FITS")
    # From the Trainer: accumulation, and 32-true precision is fp32.
    assert fits.result.config["gradient_accumulation_steps"] == 2
    assert fits.result.config["dtype"] == "float32"
    Module.steps = 0
    too_big = vramplan.callbacks.VramplanLightningCallback(
        {"batch_size": 64, "compile": False}, gpu="rtx3060", strict=True,
        print_fn=lines.append,
    )
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        callbacks=[too_big])
    with pytest.raises(DoesNotFit):
        trainer.fit(Module(), data)
    assert Module.steps == 0

"""Per-term losses in a Hugging Face ``Trainer``: ``LossMixTrainer`` (``pip install lossmix[hf]``).

Run:  python examples/hf_trainer.py [--max-steps 20] [--accumulation 2]

A tiny randomly initialised BERT (no download) classifies token sequences; the loss is
a mix of three terms on its logits with learned uncertainty weights. ``LossMixTrainer``
routes the model's outputs and the batch into the mix, logs ``train/loss/{term}`` at the
Trainer's logging steps (next to its own ``loss``), trains the weights (the mix becomes
``model.loss_mix``: in the optimizer and in every checkpoint), normalises by the
Trainer's ``num_items_in_batch`` so gradient accumulation gives the big batch's gradient,
and prints the per-term summary at the end.
"""

from __future__ import annotations

import argparse

import torch
import transformers

from lossmix import LossMix
from lossmix.loops.hf import LossMixTrainer

CE = {"type": "CrossEntropyLoss", "ignore_index": -100, "avg_non_ignore": True}
LOSS = {
    "cls": {**CE, "inputs": {"pred": "logits", "target": "labels"}},
    "smooth": {
        **CE,
        "label_smoothing": 0.1,
        "loss_weight": 0.5,
        "inputs": {"pred": "logits", "target": "labels"},
    },
    "balanced": {**CE, "class_weight": [1.0, 2.0, 1.0], "inputs": {"pred": "logits", "target": "labels"}},
    "weighting": {"type": "uncertainty"},
}


class Sequences(torch.utils.data.Dataset):
    """Label = which third of the vocabulary most tokens come from; some rows unlabelled."""

    def __init__(self, n: int = 64, length: int = 12, vocab: int = 48) -> None:
        gen = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 3, (n,), generator=gen)
        offsets = self.labels[:, None] * (vocab // 3)
        self.ids = offsets + torch.randint(0, vocab // 3, (n, length), generator=gen)
        self.labels[torch.rand(n, generator=gen) < 0.2] = -100

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--output-dir", default="hf_run")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    config = transformers.BertConfig(
        vocab_size=48,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    model = transformers.BertForSequenceClassification(config)
    training = transformers.TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=args.accumulation,
        max_steps=args.max_steps,
        learning_rate=1e-3,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = LossMixTrainer(
        model=model, args=training, train_dataset=Sequences(), loss_mix=LossMix.from_config(LOSS)
    )
    trainer.train()
    return trainer.state.log_history


if __name__ == "__main__":
    main()

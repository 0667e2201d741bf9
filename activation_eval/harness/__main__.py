"""`python -m activation_eval.harness ...` = the `activation-eval-lm-eval` command (lm-eval's CLI with
the model "activation-eval"), for launchers that take a module:

    accelerate launch -m activation_eval.harness run --model activation-eval --tasks ... --model_args ...
    torchrun --nproc_per_node 2 -m activation_eval.harness run --model activation-eval ...
"""
from .cli import console_main

if __name__ == "__main__":
    console_main()

"""cxrlm-tiny's training code: what builds the shipped demo model (weights/cxrlm-tiny) and its model card's numbers.

Not part of the library: it uses cxrlm (data, instruction builder, tiny Qwen2.5-VL builder, TRL SFT and GRPO) and
nothing in cxrlm/ imports it, except the command line's verbs, inside the function that runs them
(tests/test_layers.py checks that):

- recipe.py   the recipe end to end (`cxrlm train tiny`): data, tokenizer, encoder, SFT, GRPO, single-turn SFT
- encoder.py  vision-tower pretraining with direct heads (labels, lung boxes), label anchor
- cnn.py      the one ResNet-18 training loop: the baselines (`cxrlm eval cnn-baselines`) and the box teachers
- probes.py   linear probes on the frozen tower: soft yes/no answers, and `cxrlm eval tower-probe`
"""

"""Exercises for the course notebooks: stub -> test -> solution (style-anchors.md §10, rule 15).

Each chapter has a module of stubs that raise `NotImplementedError` (`minimost/exercises/chNN.py`,
yours to fill in), reference solutions in `minimost/exercises/solutions/chNN.py`, and tests in
`tests/exercises/test_chNN.py` that check an implementation against `minimost`'s own behaviour.

    pytest tests/exercises                                   # checks the reference solutions
    MINIMOST_EXERCISES=student pytest tests/exercises        # also checks your stubs
    MINIMOST_EXERCISES=student pytest tests/exercises/test_ch01.py -k topk   # one exercise

Chapters: ch00 (notebooks/00_setup_and_tour.ipynb), ch01 (notebooks/01_moe_from_scratch.ipynb),
ch02 (notebooks/02_mamoe.ipynb), ch03 (notebooks/03_speech_units.ipynb), ch04
(notebooks/04_pretrain_text_moe.ipynb), ch05 (notebooks/05_asr_tts_posttraining.ipynb), ch06
(notebooks/06_instruction_tuning_and_spoken_qa.ipynb), ch07 (notebooks/07_evaluation_and_ablations.ipynb).
Try before you read the solutions.
"""

"""minimost's data: the mini-world, task formats, batching and stage mixtures, and the cached build.

    world.py         seeded generator: config, splits, people and facts, sentence grammar, generate_world
    lexicon.py       the word lists (plain data)
    stories.py       5-sentence stories on 14 topics (with wrong endings for StoryCloze)
    instructions.py  QA pairs about the facts, text instructions
    spoken_lm.py     mini sWUGGY / sBLIMP / sStoryCloze / tStoryCloze
    tasks.py         ASR / TTS / text-LM / text and speech instruction formats, loss masks
    batching.py      dynamic padding, length bucketing, packing, MixtureSampler
    build.py         build_text_data(preset, out_dir): Arrow datasets + tokenizer, cached

Submodules are imported on use (nothing heavy happens at `import minimost.data`).
"""

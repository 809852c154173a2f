"""The GRPO reward on hand-made responses (DESIGN.md §2, §5); no torch needed."""

from __future__ import annotations

from realmodel.training.grpo import correctness_reward, prompt_examples

A, B = 23, 45  # 1035

CASES = [
    ("23 * 45 = 20 * 45 + 3 * 45 = 900 + 135 = 1035.\nThe answer is \\boxed{1035}.", 1.0),
    ("So the answer is 1025.", 0.0),
    # wrong, revised, right: the final answer counts
    ("23 * 45 = 1025. Let me recompute. 23 * 45 = 900 + 135 = 1035. The answer is 1035.", 1.0),
    # right, then talked out of it: wrong
    ("The answer is 1035. Wait, I made a mistake. The answer is 1045.", 0.0),
    ("I cannot compute this.", 0.0),  # no candidate at all
    ("3 * 5 = 15 and 20 * 45 = 900", 0.0),  # partial products only
]


def test_reward_is_one_exactly_for_a_correct_final_answer() -> None:
    texts = [t for t, _ in CASES]
    rewards = correctness_reward(texts, a=[A] * len(texts), b=[B] * len(texts))
    assert rewards == [r for _, r in CASES]


def test_conversational_completions_and_per_task_metric() -> None:
    completions = [[{"role": "assistant", "content": "The answer is 1035."}],
                   [{"role": "assistant", "content": "The answer is 56."}],
                   [{"role": "assistant", "content": "7 * 8 = 56"}]]
    logged: dict[str, float] = {}
    rewards = correctness_reward(completions, a=[23, 7, 7], b=[45, 8, 9],
                                 task=["2x2", "1x1", "1x1"],
                                 log_metric=lambda k, v: logged.__setitem__(k, v),
                                 trainer_state=None)  # TRL passes extra kwargs
    assert rewards == [1.0, 1.0, 0.0]
    assert logged == {"reward/2x2": 1.0, "reward/1x1": 0.5}


def test_prompt_examples_are_conversational_with_answer_columns() -> None:
    rec = {"task": "1x2", "a": 3, "b": 14, "answer": 42,
           "prompt": "Calculate 3 * 14. Think step by step."}
    (ex,) = prompt_examples([rec])
    assert ex == {"prompt": [{"role": "user", "content": rec["prompt"]}], "a": 3, "b": 14,
                  "task": "1x2"}

"""Tasks: a question, a gold answer and a verifier, loaded from a spec string by ``load_tasks``."""

from x1.tasks.answers import extract_answer
from x1.tasks.base import StepFormat, Task, TaskError, Verification
from x1.tasks.registry import list_task_sources, load_tasks

__all__ = [
    "StepFormat",
    "Task",
    "TaskError",
    "Verification",
    "extract_answer",
    "list_task_sources",
    "load_tasks",
]

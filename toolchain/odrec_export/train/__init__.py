"""Training: the teacher, distilled students, continuation (finetune), the repeat bonus."""

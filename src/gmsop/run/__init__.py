"""One run: its parts built from the config (build), its loggers (loggers), what it resumes from
(resume), the fit (training) and the test stage (test_stage). Its folder's format is
gmsop.run_folder's; its callbacks are gmsop.callbacks'."""

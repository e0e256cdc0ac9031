"""Gunicorn settings: one worker process (one model copy), several threads."""

bind = "127.0.0.1:5000"
workers = 1  # the model and every session live in this one process's memory
threads = 8
worker_class = "gthread"
timeout = 120
# The heartbeat file goes to shared memory, not the disk.
worker_tmp_dir = "/dev/shm"
# Access logs carry paths with photo ids, not names; keep them off anyway:
# a clinic that wants them can turn them on with --access-logfile.
accesslog = None
errorlog = "-"

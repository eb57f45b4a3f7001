import signal
import time


def load(context):
    return None


def infer(state, frame):
    if frame.frame_id == "hang":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            time.sleep(3600)
    return {"alive": True}

import socket


def load(context):
    return None


def infer(state, inputs):
    mode = inputs["mode"]
    if mode == "infer":
        raise RuntimeError("the network exploded")
    if mode == "hang":
        while True:
            pass
    if mode == "write_outside":
        inputs["outside"].write_text("escaped")
    if mode == "connect":
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    return inputs

from twisted.application.service import ServiceMaker

iocpsvc = ServiceMaker(
    "iocpsvc", "iocpsvc.tap", "IOCP-style socket server: contexts, decoders, encoders", "iocpsvc"
)

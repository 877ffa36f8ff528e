"""Identity networks of GUIDE: IR-SE50 (ArcFace) for the identity loss, IR-101 (CurricularFace) for the ID metric."""
from .backbone import IRBackbone
from .net import (IDLoss, IdentityCheckpointError, IdentityNet, embedding_similarity, identity_similarity, load_ir101,
                  load_ir_se50, read_state_dict)
from .preprocess import (ARCFACE_TEMPLATE_112, EG3D_CROP_LANDMARKS_512, arcface_align, eg3d_crop_face_input,
                         idloss_face_input, similarity_transform)

__all__ = [
    "IRBackbone", "IdentityNet", "IDLoss", "IdentityCheckpointError", "embedding_similarity", "identity_similarity",
    "load_ir_se50", "load_ir101", "read_state_dict", "ARCFACE_TEMPLATE_112", "EG3D_CROP_LANDMARKS_512", "arcface_align",
    "eg3d_crop_face_input", "idloss_face_input", "similarity_transform",
]

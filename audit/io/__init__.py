"""Every input format behind one reader interface: `load_side` / `load_pair` (see `sides`).

| module              | input                                                         |
|---------------------|---------------------------------------------------------------|
| `files`             | image folders: safe listing, reading and decoding             |
| `webdataset`        | tar shards, read in place                                      |
| `pathlist`          | .txt or parquet lists of image paths                          |
| `embedding_folder`  | clip-retrieval / `madaudit embed` folders, every part         |
| `arrays`            | .npy files, header checked first; value checks                |
| `parquet`           | parquet with an embedding column                               |
| `atomic`            | temp file + fsync + rename                                     |
"""

from audit.io.arrays import ArrayProblem
from audit.io.embedding_folder import EmbeddingSet, FolderProblem
from audit.io.sides import (EmbedOptions, InputProblem, LoadedSide, check_compatible, detect_kind, identity_name,
                            load_image_embedder, load_pair, load_side, side_from_array)

__all__ = ["ArrayProblem", "EmbedOptions", "EmbeddingSet", "FolderProblem", "InputProblem", "LoadedSide",
           "check_compatible", "detect_kind", "identity_name", "load_image_embedder", "load_pair", "load_side",
           "side_from_array"]

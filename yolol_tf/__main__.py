import sys

from yolol_tf.cli import main

sys.exit(main())

import os
import sys

# Make `import helpers` work from the test modules.
sys.path.insert(0, os.path.dirname(__file__))

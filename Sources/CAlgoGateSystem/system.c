// The functions are in the header (static inline); SwiftPM builds a C target from its sources.
#include "CAlgoGateSystem.h"

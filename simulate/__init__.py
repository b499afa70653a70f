"""etem.simulate"""
